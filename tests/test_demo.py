"""The ICBM152 thick-slice demo, run once: files, metric ordering, geometry, figure."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from volsr.errors import FormatError, OutputExistsError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from volsr.datasets import icbm152_t1_path
    from volsr.demo import run_demo

    try:
        icbm152_t1_path()
    except FormatError as error:
        pytest.skip(f"ICBM152 template unavailable: {error}")
    outdir = tmp_path_factory.mktemp("demo") / "out"
    return outdir, run_demo(outdir, factor=4)


@pytest.mark.slow
def test_demo_writes_every_file(demo: tuple[Path, str]) -> None:
    outdir, report = demo
    expected = {"reference.nii.gz", "lr.nii.gz", "sr_nearest.nii.gz", "sr_linear.nii.gz",
                "sr_cubic.nii.gz", "metrics.json", "metrics.md", "figure.png"}
    assert expected <= {p.name for p in outdir.iterdir()}
    assert not [p.name for p in outdir.iterdir() if p.name.startswith(".")]
    for name in expected:
        assert str(outdir / name) in report


@pytest.mark.slow
def test_demo_metrics_order_the_baselines(demo: tuple[Path, str]) -> None:
    outdir, report = demo
    rows = {row["model"]: row for row in json.loads((outdir / "metrics.json").read_text())}
    assert {"nearest", "linear", "cubic"} <= set(rows)
    # smooth anatomy: higher-order interpolation recovers thick slices better
    assert rows["cubic"]["psnr"] > rows["linear"]["psnr"] > rows["nearest"]["psnr"]
    for row in rows.values():
        assert 15 < row["psnr"] < 60
        assert 0 < row["ssim"] <= 1
        assert f"| {row['model']} | {row['psnr']:.2f} |" in report
    assert (outdir / "metrics.md").read_text().strip() in report


@pytest.mark.slow
def test_demo_geometry(demo: tuple[Path, str]) -> None:
    from volsr.datasets import icbm152_t1_path

    outdir, _ = demo
    template = nib.load(icbm152_t1_path())
    reference = nib.load(outdir / "reference.nii.gz")
    np.testing.assert_allclose(reference.affine, template.affine, atol=1e-6)
    n = template.shape[2]
    assert reference.shape == template.shape[:2] + ((n // 4) * 4,)
    lr = nib.load(outdir / "lr.nii.gz")
    assert lr.shape == template.shape[:2] + (n // 4,)
    for name in ("nearest", "linear", "cubic"):
        sr = nib.load(outdir / f"sr_{name}.nii.gz")
        assert sr.shape == reference.shape
        np.testing.assert_allclose(sr.affine, template.affine, atol=1e-6)


@pytest.mark.slow
def test_demo_figure_is_a_png(demo: tuple[Path, str]) -> None:
    from PIL import Image

    path = demo[0] / "figure.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > image.height > 100


@pytest.mark.slow
def test_demo_refuses_a_non_empty_folder(demo: tuple[Path, str]) -> None:
    from volsr.demo import run_demo

    outdir, _ = demo
    before = {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()}
    with pytest.raises(OutputExistsError, match="is not empty"):
        run_demo(outdir, factor=4)
    assert {p.name: p.stat().st_mtime_ns for p in outdir.iterdir()} == before


def test_detail_box_finds_the_square_with_the_largest_error() -> None:
    from volsr.demo import _detail_box

    error = np.zeros((40, 50))
    error[30:36, 4:10] = 1.0  # the 6x6 square of detail, lower-left corner (30, 4)
    assert _detail_box(error, 6) == (30, 4)


def test_figure_panels_with_insets_and_colour_bars(tmp_path: Path, monkeypatch) -> None:
    """Synthetic slices (no template): an image with a zoomed inset per output and for the
    reference, and per output an error map on one shared colour scale with a colour bar."""
    import matplotlib.pyplot as plt

    from volsr.demo import _figure

    rng = np.random.default_rng(0)
    reference = rng.random((30, 40))
    panels = [(name, f"{name}\nPSNR", reference + 0.05 * rng.standard_normal(reference.shape))
              for name in ("nearest", "cubic", "net")]
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)  # keep the figure open to inspect it
    _figure(tmp_path / "figure.png", panels, reference, "title")
    monkeypatch.undo()
    figure = kept[0]
    assert (tmp_path / "figure.png").read_bytes()[:8] == PNG_SIGNATURE
    by_title = {ax.get_title(): ax for ax in figure.axes}
    assert [t for t in by_title if "PSNR" in t] == [p[1] for p in panels]
    assert sum(len(ax.child_axes) for ax in figure.axes) == 4  # insets: 3 outputs + reference
    error_maps = [by_title[f"|{name} - reference|"] for name, _, _ in panels]
    assert len({ax.images[0].get_clim() for ax in error_maps}) == 1
    colour_bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 4  # the 3 error maps and the cubic-vs-network map
    plt.close(figure)

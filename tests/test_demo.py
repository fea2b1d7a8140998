"""The ICBM152 thick-slice demo, run once: files, metric ordering, geometry, trust maps, figure."""

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


def _network(outdir: Path) -> str:
    """The default model: the demo's last metrics row."""
    return json.loads((outdir / "metrics.json").read_text())[-1]["model"]


def _shift(affine: np.ndarray, start: tuple[int, int, int]) -> np.ndarray:
    """The affine of a crop starting at voxel ``start`` (naive oracle)."""
    shifted = np.array(affine, dtype=np.float64)
    shifted[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return shifted


def _crop_start(parent: np.ndarray, crop: np.ndarray) -> tuple[int, int, int]:
    """Integer voxel offset of ``crop``'s grid on ``parent``'s (same spacing and axes)."""
    offset = np.linalg.solve(parent, crop)
    np.testing.assert_allclose(offset[:3, :3], np.eye(3), atol=1e-6)
    start = np.round(offset[:3, 3])
    np.testing.assert_allclose(offset[:3, 3], start, atol=1e-4)
    return tuple(int(v) for v in start)


@pytest.mark.slow
def test_demo_writes_every_file(demo: tuple[Path, str]) -> None:
    outdir, report = demo
    net = _network(outdir)
    expected = {"reference.nii.gz", "lr.nii.gz", "sr_nearest.nii.gz", "sr_linear.nii.gz",
                "sr_cubic.nii.gz", f"sr_{net}.nii.gz", f"sr_{net}_slab.nii.gz",
                f"uncertainty_{net}.nii.gz", f"consistency_{net}.nii.gz", "metrics.json",
                "metrics.md", "figure.png"}
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
def test_demo_trust_maps_lie_on_their_grids(demo: tuple[Path, str]) -> None:
    """Uncertainty (and the slab run's output): a coronal slab of the output grid with the
    output's affine, shifted to the slab; consistency: the same slab of the LR grid."""
    from volsr.demo import CORONAL_AXIS, TRUST_SLAB

    outdir, _ = demo
    net = _network(outdir)
    trust = json.loads((outdir / "metrics.json").read_text())[-1]["trust"]
    sr, lr = nib.load(outdir / f"sr_{net}.nii.gz"), nib.load(outdir / "lr.nii.gz")
    width = nib.load(outdir / f"uncertainty_{net}.nii.gz")
    start = _crop_start(sr.affine, width.affine)
    assert start == (0, trust["slab"][0], 0)
    assert trust["slab"][1] - trust["slab"][0] == TRUST_SLAB
    assert trust["slab"][0] <= sr.shape[CORONAL_AXIS] // 2 < trust["slab"][1]  # the figure's slice
    slab_shape = sr.shape[:1] + (TRUST_SLAB,) + sr.shape[2:]
    for name in (f"uncertainty_{net}.nii.gz", f"sr_{net}_slab.nii.gz"):
        image = nib.load(outdir / name)
        assert image.shape == slab_shape
        np.testing.assert_allclose(image.affine, _shift(sr.affine, start), atol=1e-6)
    consistency = nib.load(outdir / f"consistency_{net}.nii.gz")
    assert consistency.shape == lr.shape[:1] + (TRUST_SLAB,) + lr.shape[2:]
    np.testing.assert_allclose(consistency.affine, _shift(lr.affine, start), atol=1e-6)
    assert np.all(np.asarray(width.dataobj) >= 0)


@pytest.mark.slow
def test_demo_coverage_equals_the_coverage_of_its_files(demo: tuple[Path, str]) -> None:
    from volsr.demo import FOREGROUND_THRESHOLD
    from volsr.uncertainty import coverage

    outdir, report = demo
    net = _network(outdir)
    trust = json.loads((outdir / "metrics.json").read_text())[-1]["trust"]
    width = nib.load(outdir / f"uncertainty_{net}.nii.gz")
    reference = nib.load(outdir / "reference.nii.gz")
    i, j, k = _crop_start(reference.affine, width.affine)
    ref = reference.get_fdata()[i : i + width.shape[0], j : j + width.shape[1], k : k + width.shape[2]]
    error = nib.load(outdir / f"sr_{net}_slab.nii.gz").get_fdata() - ref
    measured = coverage(width.get_fdata(), error, ref > FOREGROUND_THRESHOLD)
    assert trust["coverage_90"] == pytest.approx(measured, abs=1e-12)
    assert 0.8 < measured <= 1.0  # calibrated for real scans; the smooth template is covered more
    assert f"coverage in the foreground {measured:.3f}" in (outdir / "metrics.md").read_text()
    assert f"coverage in the foreground {measured:.3f}" in report
    consistency = nib.load(outdir / f"consistency_{net}.nii.gz").get_fdata()
    assert trust["consistency_rms"] == pytest.approx(np.sqrt(np.mean(consistency**2)), rel=1e-9)


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


def test_figure_trust_row_has_three_maps_with_colour_bars(tmp_path: Path, monkeypatch) -> None:
    """The trust row: |error| and U on the error maps' colour scale, the consistency map on
    its own LR grid (4 output rows per LR row), placed over the same panel area."""
    import matplotlib.pyplot as plt

    from volsr.demo import _figure, _TrustSlices

    rng = np.random.default_rng(1)
    reference = rng.random((32, 40))
    panels = [(name, f"{name}\nPSNR", reference + 0.05 * rng.standard_normal(reference.shape))
              for name in ("nearest", "cubic", "net")]
    trust = _TrustSlices("net", np.abs(rng.standard_normal((32, 40))), rng.random((32, 40)),
                         rng.standard_normal((8, 40)), (-0.5, 39.5, -0.5, 31.5), 0.9)
    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    _figure(tmp_path / "figure.png", panels, reference, "title", trust=trust)
    monkeypatch.undo()
    figure = kept[0]
    by_title = {ax.get_title(): ax for ax in figure.axes}
    error, width = by_title["|net - reference|\n(slab run)"], by_title[
        "U: 90 % half-width; |error| <= U in\n90.0 % of the slab's foreground"]
    assert error.images[0].get_clim() == width.images[0].get_clim() == by_title["|cubic - reference|"].images[0].get_clim()
    consistency = next(ax for title, ax in by_title.items() if title.startswith("consistency"))
    assert "LR grid" in consistency.get_title()
    assert consistency.images[0].get_array().shape == (8, 40)  # not resampled
    assert consistency.images[0].get_extent() == [-0.5, 39.5, -0.5, 31.5]
    low, high = consistency.images[0].get_clim()
    assert low == -high
    colour_bars = [ax for ax in figure.axes if ax.get_label() == "<colorbar>"]
    assert len(colour_bars) == 7  # 3 error maps, cubic-vs-network, |error|, U, consistency
    plt.close(figure)

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

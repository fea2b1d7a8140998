"""The ``volsr demo``: simulate a thick-slice scan of a real brain, upsample it, measure, plot.

Uses the ICBM152 2009a T1 template that ships inside the nilearn wheel (no download).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from volsr import io
from volsr.datasets import icbm152_t1_path
from volsr.errors import FormatError, OutputExistsError
from volsr.intensity import percentile_normalise
from volsr.volume import Volume

__all__ = ["run_demo", "DEMO_SLICE_AXIS", "FOREGROUND_THRESHOLD"]

#: Thick slices are simulated along the last array axis (axial slices of the template).
DEMO_SLICE_AXIS = 2
#: Foreground for the masked PSNR: normalised reference intensity above this value.
FOREGROUND_THRESHOLD = 0.05


def _models_to_compare() -> list[str]:
    from volsr.models import default_model_name

    names = ["nearest", "linear", "cubic"]
    best = default_model_name(spectral=False)
    return names if best in names else names + [best]


def run_demo(outdir: Path, *, factor: float = 4.0, overwrite: bool = False) -> str:
    """Thick-slice ICBM152, upsample with every baseline and the default model, evaluate.

    Parameters
    ----------
    outdir : Path
        Folder for ``reference.nii.gz``, ``lr.nii.gz``, ``sr_<model>.nii.gz``,
        ``metrics.json``, ``metrics.md`` and ``figure.png`` (created if missing).
    factor : float
        Slice spacing in HR voxels (Gaussian slice profile with FWHM = factor).
    overwrite : bool
        Replace files of an earlier demo in ``outdir``.

    Returns
    -------
    str
        The metrics table (Markdown) and the list of written files.

    Raises
    ------
    OutputExistsError
        If ``outdir`` holds demo outputs and ``overwrite`` is False.
    FormatError
        If the template is not installed (nilearn missing) or ``outdir``'s parent folder
        does not exist.

    Examples
    --------
    >>> print(run_demo(Path("demo_out"), overwrite=True))  # doctest: +SKIP
    """
    from volsr.degrade import thick_slice
    from volsr.engine import upsample
    from volsr.metrics import psnr, ssim

    outdir = Path(outdir)
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise OutputExistsError(f"{outdir} is not empty (pass --overwrite to replace the demo)")
    if not outdir.parent.is_dir():  # like every other output: the folder it goes in must exist
        raise FormatError(f"output folder does not exist: {outdir.parent}")
    outdir.mkdir(exist_ok=True)
    template = io.load(icbm152_t1_path())
    hr_values, _ = percentile_normalise(template.numpy())
    hr = Volume(hr_values, template.affine, template.axes, meta=template.meta)
    lr = thick_slice(hr, axis=DEMO_SLICE_AXIS, factor=factor)
    scale = tuple(factor if a == DEMO_SLICE_AXIS else 1.0 for a in range(3))
    outputs = {}
    for name in _models_to_compare():
        lazy = upsample(lr, scale=scale, model=name)
        outputs[name] = lazy.replace(data=lazy.numpy())  # computed once: scored and saved
    covered = next(iter(outputs.values())).shape
    reference = hr.crop(tuple(slice(0, n) for n in covered))
    ref = reference.numpy()
    mask = ref > FOREGROUND_THRESHOLD
    rows = []
    for name, volume in outputs.items():
        est = volume.numpy()
        rows.append(
            {
                "model": name,
                "psnr": psnr(ref, est, data_range=1.0),
                "psnr_foreground": psnr(ref, est, data_range=1.0, mask=mask),
                "ssim": ssim(ref, est, data_range=1.0),
            }
        )
    written = [io.save(reference, outdir / "reference.nii.gz", overwrite=overwrite)]
    written.append(io.save(lr, outdir / "lr.nii.gz", overwrite=overwrite))
    for name, volume in outputs.items():
        written.append(io.save(volume, outdir / f"sr_{name}.nii.gz", overwrite=overwrite))
    table = _markdown(rows, factor)
    (outdir / "metrics.json").write_text(json.dumps(rows, indent=2) + "\n")
    (outdir / "metrics.md").write_text(table + "\n")
    best = max(rows, key=lambda row: row["psnr"])["model"]
    _figure(outdir / "figure.png", outputs, reference, best, factor)
    written += [outdir / "metrics.json", outdir / "metrics.md", outdir / "figure.png"]
    return table + "\n\nwrote:\n" + "\n".join(f"  {p}" for p in written)


def _markdown(rows: list[dict], factor: float) -> str:
    header = (
        f"ICBM152 2009a T1, thick slices x{factor:g} along axis {DEMO_SLICE_AXIS} "
        f"(Gaussian profile, FWHM {factor:g} voxels); data range 1 after /P99.9 and clipping; "
        f"foreground = reference > {FOREGROUND_THRESHOLD}\n\n"
        "| model | PSNR (dB) | PSNR foreground (dB) | SSIM |\n|---|---|---|---|"
    )
    lines = [
        f"| {r['model']} | {r['psnr']:.2f} | {r['psnr_foreground']:.2f} | {r['ssim']:.4f} |"
        for r in rows
    ]
    return "\n".join([header] + lines)


def _figure(
    path: Path, outputs: dict[str, Volume], reference: Volume, best: str, factor: float
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"LR, x{factor:g} slices (nearest)", outputs["nearest"])]
    panels += [(name, volume) for name, volume in outputs.items() if name != "nearest"]
    panels.append(("reference", reference))
    middle = reference.shape[1] // 2
    slices = [np.asarray(volume.data[:, middle, :]).T for _, volume in panels]
    error = np.abs(np.asarray(outputs[best].data[:, middle, :]).T - slices[-1])
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.4 * (len(panels) + 1), 4.2))
    for ax, (title, _), image in zip(axes, panels, slices):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1, origin="lower")
        ax.set_title(title)
    axes[-1].imshow(error, cmap="magma", vmin=0, vmax=0.25, origin="lower")
    axes[-1].set_title(f"|{best} - reference| (0-0.25)")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"ICBM152 coronal slice {middle}: thick slices x{factor:g} along the vertical axis")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

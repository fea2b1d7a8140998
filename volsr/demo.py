"""The ``volsr demo``: simulate a thick-slice scan of a real brain, upsample it, measure, plot.

Uses the ICBM152 2009a T1 template that ships inside the nilearn wheel (no download). The
figure shows one coronal slice of every output (PSNR/SSIM of the whole volume in each title,
a x4 zoomed inset of the square where cubic errs most) over its error map (one colour scale,
a colour bar on each), and where the network is closer to the reference than cubic.
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
#: Zoom of the figure's insets; each inset is this fraction of its panel's width.
INSET_ZOOM = 4
_INSET_WIDTH = 0.42


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
    _plot(outdir / "figure.png", outputs, reference, rows, factor)
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


def _plot(path: Path, outputs: dict[str, Volume], reference: Volume, rows: list[dict],
          factor: float) -> None:
    """The coronal middle slice of every output, titled with its whole-volume metrics."""
    metrics = {row["model"]: row for row in rows}
    network = list(outputs)[-1]  # the default model (cubic when no network is shipped)
    order = ["nearest"] + [n for n in outputs if n not in ("nearest", network)] + [network]
    middle = reference.shape[1] // 2
    ref = np.asarray(reference.data[:, middle, :], dtype=np.float64).T
    crop = tuple(_extent(ref.any(axis=axis)) for axis in (1, 0))  # the head, 4-voxel margin

    def coronal(volume: Volume) -> np.ndarray:
        return np.asarray(volume.data[:, middle, :], dtype=np.float64).T[crop]

    panels = []
    for name in order:
        what = f"nearest (LR, x{factor:g} slices)" if name == "nearest" else name
        row = metrics[name]
        label = f"{what}\nPSNR {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}"
        panels.append((name, label, coronal(outputs[name])))
    title = (f"ICBM152 2009a, coronal slice {middle}: thick slices x{factor:g} along the "
             f"vertical axis; PSNR/SSIM over the whole volume (data range 1); insets "
             f"x{INSET_ZOOM}")
    _figure(path, panels, ref[crop], title)


def _extent(occupied: np.ndarray, margin: int = 4) -> slice:
    """The occupied index range along one axis, with a margin (everything if none)."""
    index = np.flatnonzero(occupied)
    return slice(max(0, index[0] - margin), index[-1] + margin + 1) if index.size else slice(None)


def _detail_box(error: np.ndarray, size: int) -> tuple[int, int]:
    """Lower-left (row, col) of the ``size``-pixel square with the largest summed ``error``."""
    from scipy.ndimage import uniform_filter

    score = uniform_filter(error, size=size, mode="constant")  # window centred on (r, c)
    half = size // 2
    starts = score[half : error.shape[0] - size + half + 1, half : error.shape[1] - size + half + 1]
    row, col = np.unravel_index(int(np.argmax(starts)), starts.shape)
    return int(row), int(col)


def _inset(ax, image: np.ndarray, box: tuple[int, int], size: int, style: dict) -> None:
    """Zoomed inset of ``image[box : box + size]`` in the panel corner away from the box."""
    rows, cols = image.shape
    x0 = 1 - _INSET_WIDTH - 0.01 if box[1] + size / 2 < cols / 2 else 0.01
    y0 = 1 - _INSET_WIDTH - 0.01 if box[0] + size / 2 < rows / 2 else 0.01
    inset = ax.inset_axes((x0, y0, _INSET_WIDTH, _INSET_WIDTH),
                          xlim=(box[1] - 0.5, box[1] + size - 0.5),
                          ylim=(box[0] - 0.5, box[0] + size - 0.5))
    inset.imshow(image, origin="lower", interpolation="nearest", **style)
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("yellow")
    ax.indicate_inset_zoom(inset, edgecolor="yellow", alpha=0.9)


def _figure(path: Path, panels: list[tuple[str, str, np.ndarray]], reference: np.ndarray,
            title: str) -> None:
    """Images (top row, each with a zoomed inset) over their error maps (bottom row).

    ``panels`` are (model, title, slice) triples, the network's last; ``reference`` is the
    same slice of the reference. The error maps share one colour scale (set by cubic's) and
    each has a colour bar; the last one maps where the network is closer than cubic.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = {name: np.abs(image - reference) for name, _, image in panels}
    vmax = max(0.05, float(np.ceil(np.percentile(errors["cubic"], 99.5) * 20) / 20))
    size = max(8, round(_INSET_WIDTH * reference.shape[1] / INSET_ZOOM))
    box = _detail_box(errors["cubic"], size)
    fig, axes = plt.subplots(2, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 6.0),
                             layout="constrained")
    gray = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    for ax, (_, label, image) in zip(axes[0], panels + [("", "reference", reference)]):
        ax.imshow(image, origin="lower", **gray)
        _inset(ax, image, box, size, gray)
        ax.set_title(label, fontsize=10)
    for ax, (name, _, _) in zip(axes[1], panels):
        shown = ax.imshow(errors[name], origin="lower", cmap="magma", vmin=0.0, vmax=vmax)
        fig.colorbar(shown, ax=ax, shrink=0.8, label="|error|")
        ax.set_title(f"|{name} - reference|", fontsize=10)
    network = panels[-1][0]
    shown = axes[1, -1].imshow(errors["cubic"] - errors[network], origin="lower", cmap="RdBu",
                               vmin=-vmax / 2, vmax=vmax / 2)
    fig.colorbar(shown, ax=axes[1, -1], shrink=0.8)
    axes[1, -1].set_title(f"|cubic error| - |{network} error|\n(blue: {network} closer)",
                          fontsize=10)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)

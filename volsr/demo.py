"""The ``volsr demo``: simulate a thick-slice scan of a real brain, upsample it, measure, plot.

Uses the ICBM152 2009a T1 template that ships inside the nilearn wheel (no download). The
figure shows one coronal slice of every output (PSNR/SSIM of the whole volume in each title,
a x4 zoomed inset of the square where cubic errs most) over its error map (one colour scale,
a colour bar on each), and where the network is closer to the reference than cubic.

Its last row shows the default model's trust maps on the same slice: its ``|error|``, its
calibrated 90 % half-width (:mod:`volsr.uncertainty`) and its consistency map (on the LR
grid), from a second run through :func:`volsr.engine.upsample_to_store` on a coronal slab of
:data:`TRUST_SLAB` slices around that slice: the uncertainty runs the network's flipped
members (8 forwards for the shipped network), which on the whole volume would make the demo
about 7 times slower.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from volsr import io
from volsr.datasets import icbm152_t1_path
from volsr.errors import FormatError, OutputExistsError
from volsr.intensity import percentile_normalise
from volsr.volume import Volume

__all__ = ["run_demo", "DEMO_SLICE_AXIS", "FOREGROUND_THRESHOLD", "TRUST_SLAB"]

#: Thick slices are simulated along the last array axis (axial slices of the template).
DEMO_SLICE_AXIS = 2
#: The figure's slices are coronal: a fixed index along this (never upsampled) axis.
CORONAL_AXIS = 1
#: Coronal slices (around the figure's) that get the default model's trust maps.
TRUST_SLAB = 16
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

    The default model also gets its trust maps on a coronal slab of :data:`TRUST_SLAB`
    slices around the figure's slice (a second run, see the module docstring), and their
    check: the share of foreground voxels whose ``|error|`` lies within the 90 % half-width.

    Parameters
    ----------
    outdir : Path
        Folder for ``reference.nii.gz``, ``lr.nii.gz``, ``sr_<model>.nii.gz``,
        ``metrics.json``, ``metrics.md`` and ``figure.png`` (created if missing), and for
        the default model's slab run: ``sr_<model>_slab.nii.gz`` and
        ``uncertainty_<model>.nii.gz`` (output grid: the slab of the output's grid) and
        ``consistency_<model>.nii.gz`` (the slab of the LR grid).
    factor : float
        Slice spacing in HR voxels (Gaussian slice profile with FWHM = factor).
    overwrite : bool
        Replace files of an earlier demo in ``outdir``.

    Returns
    -------
    str
        The metrics (Markdown, as in ``metrics.md``) and the list of written files.

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
    network = list(outputs)[-1]  # the default model (cubic when no network is shipped)
    thickness = factor * float(hr.spacing[DEMO_SLICE_AXIS])  # mm: FWHM of factor HR voxels
    trust = _trust_run(lr, outdir, network, scale=scale, thickness=thickness, overwrite=overwrite)
    written += trust.paths
    rows[-1]["trust"] = trust.record(reference)
    text = _markdown(rows, factor) + "\n\n" + _trust_markdown(network, rows[-1]["trust"], covered)
    (outdir / "metrics.json").write_text(json.dumps(rows, indent=2) + "\n")
    (outdir / "metrics.md").write_text(text + "\n")
    _plot(outdir / "figure.png", outputs, reference, rows, factor, trust)
    written += [outdir / "metrics.json", outdir / "metrics.md", outdir / "figure.png"]
    return text + "\n\nwrote:\n" + "\n".join(f"  {p}" for p in written)


def _slab(n: int) -> slice:
    """The :data:`TRUST_SLAB` coronal indices centred on the figure's slice ``n // 2``."""
    width = min(TRUST_SLAB, n)
    start = min(max(0, n // 2 - width // 2), n - width)
    return slice(start, start + width)


@dataclasses.dataclass(frozen=True)
class _TrustRun:
    """The files of the default model's run on the coronal slab ``slab`` (output = LR index)."""

    model: str
    slab: slice
    members: int
    output: Path
    uncertainty: Path
    consistency: Path

    @property
    def paths(self) -> list[Path]:
        return [self.output, self.uncertainty, self.consistency]

    def record(self, reference: Volume) -> dict:
        """The check of the written maps: :func:`volsr.uncertainty.calibration_report` over
        the slab's foreground (float64, from the files), and the consistency map's RMS."""
        from volsr.uncertainty import calibration_report

        ref = _coronal_box(reference, self.slab).numpy().astype(np.float64)
        error = io.load(self.output).numpy().astype(np.float64) - ref
        width = io.load(self.uncertainty).numpy().astype(np.float64)
        report = calibration_report(width, error, ref > FOREGROUND_THRESHOLD)
        mismatch = io.load(self.consistency).numpy().astype(np.float64)
        return {"slab": [self.slab.start, self.slab.stop], "members": self.members, **report,
                "consistency_rms": float(np.sqrt(np.mean(mismatch**2)))}  # fmt: skip


def _coronal_box(volume: Volume, slab: slice) -> Volume:
    return volume.crop(tuple(slab if a == CORONAL_AXIS else slice(None) for a in range(3)))


def _trust_run(lr: Volume, outdir: Path, model: str, *, scale: tuple[float, ...], thickness: float,
               overwrite: bool) -> _TrustRun:  # fmt: skip
    """Upsample the LR volume's coronal slab with ``model``, its uncertainty and consistency.

    ``thickness`` (mm) is the simulated slices' Gaussian FWHM, for the consistency map.
    """
    from volsr.acquisition import acquisition_for
    from volsr.engine import EngineOptions, TrustOptions, upsample_to_store
    from volsr.models import get_card
    from volsr.models.trust import calibration_for

    slab = _slab(lr.shape[CORONAL_AXIS])
    run = _TrustRun(model, slab, calibration_for(get_card(model)).members, outdir / f"sr_{model}_slab.nii.gz",
                    outdir / f"uncertainty_{model}.nii.gz", outdir / f"consistency_{model}.nii.gz")  # fmt: skip
    source = _coronal_box(lr, slab)
    acquisition = acquisition_for(source, thickness=thickness, estimate_noise=False)
    trust = TrustOptions(uncertainty=run.uncertainty, consistency=run.consistency, acquisition=acquisition)
    upsample_to_store(source, run.output, scale=scale, model=model, options=EngineOptions(quiet=True), trust=trust,
                      overwrite=overwrite)  # fmt: skip
    return run


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


def _trust_markdown(model: str, trust: dict, shape: tuple[int, ...]) -> str:
    from volsr.uncertainty import LEVEL

    start, stop = trust["slab"]
    return (
        f"{model} trust maps (uncertainty_{model}.nii.gz, consistency_{model}.nii.gz), from a "
        f"second run on the coronal slab {start}-{stop - 1} ({stop - start} of "
        f"{shape[CORONAL_AXIS]} slices, not the whole volume: the uncertainty runs the model on "
        f"{trust['members']} flips of every tile): 90 % interval coverage in the foreground "
        f"{trust['coverage_90']:.3f} (nominal {LEVEL:.2f}), AUSE {trust['ause']:.3f}, Spearman "
        f"(U, |error|) {trust['spearman_uncertainty_error']:.3f}; consistency RMS "
        f"{trust['consistency_rms']:.4f} (data range 1)"
    )


def _plot(path: Path, outputs: dict[str, Volume], reference: Volume, rows: list[dict],
          factor: float, trust: _TrustRun) -> None:
    """The coronal middle slice of every output, titled with its whole-volume metrics."""
    metrics = {row["model"]: row for row in rows}
    network = list(outputs)[-1]  # the default model (cubic when no network is shipped)
    order = ["nearest"] + [n for n in outputs if n not in ("nearest", network)] + [network]
    middle = reference.shape[CORONAL_AXIS] // 2
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
    start, stop = trust.slab.start, trust.slab.stop
    title = (f"ICBM152 2009a, coronal slice {middle}: thick slices x{factor:g} along the "
             f"vertical axis; PSNR/SSIM over the whole volume (data range 1); insets "
             f"x{INSET_ZOOM}\nbottom row: {network}'s trust maps from a second run on the coronal "
             f"slab {start}-{stop - 1} (not the whole volume: the uncertainty runs it on "
             f"{trust.members} flips of every tile)")
    _figure(path, panels, ref[crop], title,
            trust=_trust_slices(trust, ref, middle, crop, metrics[network]["trust"]))


@dataclasses.dataclass(frozen=True)
class _TrustSlices:
    """The default model's trust maps on the figure's slice, as drawn.

    ``error`` and ``width`` are (rows, cols) crops of the output grid like the other panels;
    ``consistency`` is the slice on its own LR grid, which covers ``extent`` (left, right,
    bottom, top) in the other panels' pixel coordinates.
    """

    model: str
    error: np.ndarray
    width: np.ndarray
    consistency: np.ndarray
    extent: tuple[float, float, float, float]
    coverage: float


def _trust_slices(run: _TrustRun, reference: np.ndarray, middle: int, crop: tuple[slice, slice],
                  record: dict) -> _TrustSlices:  # fmt: skip
    """The figure's coronal slice (index ``middle`` of the output) of the slab run's maps.

    ``reference`` is that slice of the reference, uncropped, as drawn (rows: the slice axis).
    """
    at = middle - run.slab.start

    def drawn(volume: Volume) -> np.ndarray:
        return np.asarray(volume.data[:, at, :], dtype=np.float64).T

    width = io.load(run.uncertainty)
    consistency = io.load(run.consistency)
    # The LR slice's outer voxel edges, placed on the output grid by the two affines.
    edges = np.array([[-0.5, at, -0.5, 1.0], [consistency.shape[0] - 0.5, at, consistency.shape[2] - 0.5, 1.0]]).T
    (left, right), _, (bottom, top) = np.linalg.solve(width.affine, consistency.affine @ edges)[:3]
    rows, cols = (0 if c.start is None else c.start for c in crop)
    return _TrustSlices(run.model, np.abs(drawn(io.load(run.output)) - reference)[crop], drawn(width)[crop],
                        drawn(consistency), (left - cols, right - cols, bottom - rows, top - rows),
                        record["coverage_90"])  # fmt: skip


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
            title: str, *, trust: _TrustSlices | None = None) -> None:
    """Images (top row, each with a zoomed inset) over their error maps (second row).

    ``panels`` are (model, title, slice) triples, the network's last; ``reference`` is the
    same slice of the reference. The error maps share one colour scale (set by cubic's) and
    each has a colour bar; the last one maps where the network is closer than cubic. With
    ``trust``, a third row shows its ``|error|`` and uncertainty (on that colour scale) and
    its consistency map (own symmetric scale), each with a colour bar.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    errors = {name: np.abs(image - reference) for name, _, image in panels}
    vmax = max(0.05, float(np.ceil(np.percentile(errors["cubic"], 99.5) * 20) / 20))
    size = max(8, round(_INSET_WIDTH * reference.shape[1] / INSET_ZOOM))
    box = _detail_box(errors["cubic"], size)
    nrows = 2 if trust is None else 3
    fig, axes = plt.subplots(nrows, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.0 * nrows),
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
    if trust is not None:
        _trust_row(fig, axes[2], trust, vmax)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _trust_row(fig, axes, trust: _TrustSlices, vmax: float) -> None:
    """``|error|``, the 90 % half-width and the consistency map (LR grid) in ``axes[:3]``."""
    for ax, image, label, what in (
        (axes[0], trust.error, "|error|", f"|{trust.model} - reference|\n(slab run)"),
        (axes[1], trust.width, "U", f"U: 90 % half-width; |error| <= U in\n"
                                    f"{100 * trust.coverage:.1f} % of the slab's foreground"),
    ):  # fmt: skip
        shown = ax.imshow(image, origin="lower", cmap="magma", vmin=0.0, vmax=vmax)
        fig.colorbar(shown, ax=ax, shrink=0.8, label=label)
        ax.set_title(what, fontsize=10)
    limit = max(1e-6, float(np.percentile(np.abs(trust.consistency), 99.5)))
    rows, cols = trust.error.shape
    shown = axes[2].imshow(trust.consistency, origin="lower", cmap="RdBu", vmin=-limit, vmax=limit,
                           extent=trust.extent, interpolation="nearest")  # fmt: skip
    axes[2].set_xlim(-0.5, cols - 0.5)
    axes[2].set_ylim(-0.5, rows - 0.5)
    fig.colorbar(shown, ax=axes[2], shrink=0.8, label="re-acquired - input")
    axes[2].set_title("consistency: re-acquired - input\n(drawn on its LR grid, not resampled)",
                      fontsize=10)

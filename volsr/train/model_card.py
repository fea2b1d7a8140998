"""Model cards: the Markdown facts sheet of exported mDCSRN weights, from their sidecar alone.

Everything on a card comes from the weights' JSON sidecar (written by
:func:`volsr.train.build.export_weights` / :func:`~volsr.train.build.export_checkpoint`): the
training config recorded in the checkpoint (so the training data are exactly the volumes the
run listed), the step, and the last validation metrics. The only file read besides the
sidecar is each training volume's header, for the voxel sizes the network saw; when the
shared data folder is absent that line says so instead.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volsr.datasets import shared_data_root

__all__ = ["render_model_card", "write_model_card"]

#: Last line of a rendered card: the SHA-256 of the text above it. A card whose text no longer
#: matches (edited since) or that has no such line (written by hand) is never overwritten.
_STAMP = "<!-- rendered by volsr export-weights from the sidecar; sha256 {digest} -->"
_STAMP_LINE = re.compile(r"\n<!-- rendered by volsr export-weights from the sidecar; sha256 ([0-9a-f]{64}) -->\n\Z")

#: Data card (``data_cards/``) of each data source, by path prefix.
_DATA_CARDS = (
    ("mri/templates/", "mni152_fsl.md"),
    ("mri/ixi_t1_2mm/", "ixi_t1_2mm.md"),
    ("mri/MR_Gd", "mr_gd.md"),
    ("icbm152", "icbm152_2009a.md"),
    ("mri/validation/chris_t1", "chris_t1.md"),
)


def _data_card(name: str) -> str:
    for prefix, card in _DATA_CARDS:
        if name.startswith(prefix):
            return f"`data_cards/{card}`"
    return "(no data card)"


def _spacings(datasets: Sequence[str]) -> np.ndarray | None:
    """(N, 3) voxel sizes in mm of the training volumes, or None if a file is missing."""
    from volsr import io

    root = shared_data_root()
    sizes = []
    for name in datasets:
        path = Path(name) if Path(name).is_absolute() else root / name
        if not path.is_file():
            return None
        affine = io.load(path).affine
        sizes.append(np.linalg.norm(affine[:3, :3], axis=0))
    return np.array(sizes) if sizes else None


def _range(values: Any, unit: str = "") -> str:
    if values is None:
        return "off"
    low, high = values
    return f"{low:g}{unit}" if low == high else f"{low:g}-{high:g}{unit}"


def _data_lines(data: Mapping[str, Any], datasets: Sequence[str]) -> list[str]:
    groups: dict[str, list[str]] = {}
    for name in datasets:
        groups.setdefault(_data_card(name), []).append(name)
    lines = [f"Exactly the {len(datasets)} volumes the run listed "
             f"(config patterns: {', '.join(f'`{v}`' for v in data['volumes'])}), relative to "
             f"the shared data folder (`$VOLSR_DATA`):", ""]
    for card, names in groups.items():
        shown = ", ".join(f"`{n}`" for n in names[:4]) + (
            f" and {len(names) - 4} more" if len(names) > 4 else "")
        lines.append(f"- {len(names)} from {card}: {shown}")
    spacing = _spacings(datasets)
    zoom = data.get("zoom_range") or (1.0, 1.0)
    if spacing is None:
        lines.append("- voxel sizes: unknown (shared data folder absent when the card was made)")
    else:
        low, high = spacing.min() * zoom[0], spacing.max() * zoom[1]
        factors = data["factor_range"]
        lines += [f"- source voxel sizes {spacing.min():.2f}-{spacing.max():.2f} mm, resampled by "
                  f"x{_range(zoom)}: HR (in-plane) spacing seen {low:.2f}-{high:.2f} mm, "
                  f"slice spacing seen {low * factors[0]:.2f}-{high * factors[1]:.2f} mm"]
    return lines


def _degradation_lines(data: Mapping[str, Any]) -> list[str]:
    noise = data.get("snr_db_range")
    return [
        f"- thick-slice factor (slice spacing / voxel size): {_range(data['factor_range'])}"
        f"{' (integers)' if data.get('integer_factors') else ' (real-valued)'}, along axis "
        f"{', '.join(str(a) for a in data['slice_axes'])} (one per batch)",
        f"- slice profiles: {', '.join(data['profiles'])}; thickness / spacing "
        f"{_range(data['thickness_ratio_range'])} (< 1: gaps, > 1: overlap)",
        f"- Rician noise: {'none (clean)' if noise is None else 'SNR ' + _range(noise, ' dB')}"
        f"{'; the target keeps the noise field (as a noisy reference scan does)' if noise and data.get('noisy_target') else ''}",
        *([f"- isotropic batches (all three axes degraded alike): p = "
           f"{data['isotropic_probability']:g}, factors "
           f"{_range(data.get('isotropic_factor_range') or data['factor_range'])}"]
          if data.get("isotropic_probability") else []),
        f"- augmentation: zoom {_range(data.get('zoom_range'))}, axis permutation "
        f"{'on' if data.get('permute_axes') else 'off'}, flips along "
        f"{list(data.get('flip_axes') or []) or 'none'}, intensity scale "
        f"{_range(data.get('scale_range'))}, shift {_range(data.get('shift_range'))}, "
        f"bias field {_range(data.get('bias_field_range'))}",
        f"- patches {'x'.join(str(n) for n in data['patch'])} voxels, "
        f"batch {data['batch_size']}, foreground-centred with p = {data['p_foreground']:g}",
    ]


def _validation_lines(config: Mapping[str, Any], validation: Mapping[str, Any] | None) -> list[str]:
    spec = config.get("validation")
    if not validation or not spec:
        return ["No validation was recorded with these weights."]
    names = sorted({key.split("/")[0] for key in validation if "/" in key})
    crop = spec.get("crop")
    lines = [f"At step {validation.get('step', '?')}: thick-slice x{spec['factor']:g} along axis "
             f"{spec['axis']}, Gaussian profile (FWHM = slice spacing), volumes / P99.9 clipped "
             f"to [0, 1]{', centre crop ' + 'x'.join(map(str, crop)) if crop else ''}; PSNR "
             f"and 3-D SSIM with data range 1 on the covered HR grid.", "",
             "| volume | data card | PSNR (dB) | gain over cubic (dB) | SSIM |",
             "|---|---|---|---|---|"]
    for name in names:
        psnr, gain, ssim = (validation.get(f"{name}/{m}", float("nan"))
                            for m in ("psnr", "psnr_gain", "ssim"))
        card = _data_card("icbm152" if name == "icbm152" else f"mri/validation/{name}")
        lines.append(f"| {name} | {card} | {psnr:.2f} | {gain:+.2f} | {ssim:.4f} |")
    return lines + ["", "Full table (factors 2, 3, 4, every slice axis): "
                        "`python bench/mri_quality.py --axes 0,1,2`."]


def render_model_card(sidecar: Mapping[str, Any], *, file_name: str) -> str:
    """The Markdown model card of exported weights.

    Parameters
    ----------
    sidecar : mapping
        The weights' JSON sidecar (``config``, ``card``, ``metadata`` with
        ``training_config``, ``datasets``, ``step``, ``validation``).
    file_name : str
        The weights file name shown on the card.

    Returns
    -------
    str
        Markdown text ending in a newline.

    Raises
    ------
    ValueError
        If the sidecar lacks the card name or the training config.

    Examples
    --------
    >>> render_model_card({"card": {}}, file_name="x.safetensors")
    Traceback (most recent call last):
    ...
    ValueError: sidecar of x.safetensors needs card.name and metadata.training_config
    """
    card, metadata = sidecar.get("card", {}), sidecar.get("metadata", {})
    config = metadata.get("training_config")
    if "name" not in card or not config:
        raise ValueError(f"sidecar of {file_name} needs card.name and metadata.training_config")
    data, optim = config["data"], config["optim"]
    low, high = card["scale_range"]
    arch = ", ".join(f"{k} {v}" for k, v in sorted(sidecar.get("config", {}).items()))
    lines = [
        f"# Model card: `{card['name']}`", "", card.get("description", ""), "",
        "## Weights", "",
        f"- file `volsr/models/weights/{file_name}` (safetensors, no pickle) + JSON sidecar",
        (f"- Meta-SRGAN ({arch}): residual dense features on the LR grid, a meta-upscale that "
         f"predicts each output voxel's filter from its offset and the per-axis scale, residual "
         f"over cubic B-spline interpolation" if config["model"].get("arch") == "meta_srgan" else
         f"- mDCSRN ({arch}), residual over cubic B-spline interpolation on the HR grid"),
        f"- training step {metadata.get('step', '?')} of {optim['steps']} "
        f"({'EMA weights, decay ' + str(optim.get('ema_decay')) if metadata.get('ema') else 'raw weights'}"
        f"{', checkpoint ' + metadata['checkpoint'] if metadata.get('checkpoint') else ''}); "
        f"{'L1 + WGAN-GP' if config.get('gan') else 'L1 loss'}, run `{config['run']['name']}`",
        *([f"- started from the weights of `{config['run']['init_from']}` (an earlier stage; "
           f"its config is in `configs/`), fresh optimiser and schedule"]
          if config["run"].get("init_from") else []),
        "", "## Intended use", "",
        f"Thick-slice MRI (T1-weighted) to isotropic: per-axis factors {low:g}-{high:g} "
        f"(the axis combinations trained: see Limits), slices along any axis. Inputs are "
        f"divided by their whole-volume 99.9th percentile before the network and scaled back after "
        f"(`input_scaling = p99.9`). `volsr upsample IN OUT --scale 1,1,4 --model {card['name']}`.",
        "", "## Training data", "", *_data_lines(data, metadata.get("datasets", [])),
        "", "## Degradation model (low-resolution inputs made on the fly)", "",
        *_degradation_lines(data),
        "", "## Validation", "", *_validation_lines(config, metadata.get("validation")),
        "", "## Limits", "",
        f"- Trained on the {len(metadata.get('datasets', []))} volumes above only: anatomy, "
        "contrasts and scanners outside them (lesions, children, non-T1 contrasts) are "
        "untested.",
        f"- Factors above {high:g} along an axis are refused by the engine (the card's range); "
        f"{_axes_limit(data)}; real acquisitions with other slice profiles or noise levels "
        "than those above may gain less.",
        "- Validation numbers come from simulated thick slices of held-out volumes, not from "
        "real thick-slice acquisitions; `chris_t1` is validation only (its licence forbids "
        "training on it).",
        "- Research software: not for diagnosis.",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(weights: str | Path, folder: str | Path) -> Path:
    """Render the card of a weights file from its sidecar into ``folder/<registry name>.md``.

    A card already there is replaced only if it is an untouched rendering (its last line
    stamps the SHA-256 of the text above it); a card written or edited by hand is kept, with
    a warning, so ``volsr export-weights --overwrite`` never loses a hand-written section.

    Parameters
    ----------
    weights : str or Path
        The ``.safetensors`` file (its ``.json`` sidecar is read).
    folder : str or Path
        Destination folder (created if missing), e.g. ``volsr/models/cards``.

    Returns
    -------
    Path
        The Markdown file (written, or kept as it was: see above).

    Raises
    ------
    FileNotFoundError
        If the sidecar is missing.
    ValueError
        As :func:`render_model_card`.

    Examples
    --------
    >>> write_model_card("missing.safetensors", "cards")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: no sidecar missing.json...
    """
    weights = Path(weights)
    sidecar = weights.with_suffix(".json")
    if not sidecar.is_file():
        raise FileNotFoundError(f"no sidecar {sidecar} beside {weights}")
    document = json.loads(sidecar.read_text(encoding="utf-8"))
    text = render_model_card(document, file_name=weights.name)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{document['card']['name']}.md"
    if path.is_file() and _edited(path.read_text(encoding="utf-8")):
        warnings.warn(f"kept {path}: written or edited by hand since its rendering (the new "
                      f"facts are in {sidecar.name}; delete the card to render it afresh)",
                      stacklevel=2)
        return path
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    path.write_text(text + "\n" + _STAMP.format(digest=digest) + "\n", encoding="utf-8")
    return path


def _edited(card: str) -> bool:
    """Whether ``card`` is not, to the byte, a rendering :func:`write_model_card` wrote."""
    stamp = _STAMP_LINE.search(card)
    if stamp is None:
        return True
    body = card[: stamp.start()]
    return hashlib.sha256(body.encode("utf-8")).hexdigest() != stamp.group(1)


def _axes_limit(data: Mapping[str, Any]) -> str:
    """Which upsampled-axis combinations the training covered (one clause)."""
    if data.get("isotropic_probability"):
        low, high = data.get("isotropic_factor_range", (1.0, 4.0))
        return ("trained on one thick-slice axis and on isotropic low resolution (all three "
                f"axes alike, factors {low:g}-{high:g}); other combinations (e.g. 2,2,4) are "
                "untested")
    return ("a thick-slice model learned one low-resolution axis, so `volsr upsample` does "
            "not pick it by default when more than one axis is upsampled")

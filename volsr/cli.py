"""The ``volsr`` command line: parse arguments, call the library, print, set the exit status.

Exit status: 0 on success, 2 on a user error (one line on stderr, no traceback, no partial
output), 1 on an operating-system failure such as a full disk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2, like every other user error
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default where it has one worth saying (not None, False or stated)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in text \
                or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    return values


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"chunk sizes must be >= 1, got {text!r}")
    return values


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument(
        "--fill-nonfinite",
        type=_finite,
        metavar="VALUE",
        help="replace NaN/Inf voxels by VALUE (by default they are refused)",
    )


def _add_external_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-external", action="store_true",
        help="read HDF5 data held in other files (external raw storage, external links, virtual "
             "datasets with sources outside the input's folder); refused by default",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``volsr`` command.

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> build_parser().parse_args(["info", "a.nii.gz"]).command
    'info'
    """
    parser = _Parser(prog="volsr", description="Super-resolution for MRI volumes and spectral cubes.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = commands.add_parser("info", help="shape, spacing, affine, dtype and bands of a file")
    info.add_argument("path", help="file, or file:key for .mat / .h5")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_external_option(info)

    convert = commands.add_parser("convert", help="convert between formats (geometry kept)")
    convert.add_argument("input", help="input file: .nii/.nii.gz, .zarr, .hdr (ENVI), file.h5:/dataset or file.mat:variable")
    convert.add_argument("output", help="output file, same forms as the input; refused if it exists (see --overwrite)")
    convert.add_argument("--chunks", type=_ints, help="output chunk shape, e.g. 64,64,64")
    _add_output_options(convert)
    _add_external_option(convert)

    degrade = commands.add_parser("degrade", help="simulate a low-resolution acquisition")
    degrade.add_argument("input", help="input file: .nii/.nii.gz, .zarr, .hdr (ENVI), file.h5:/dataset or file.mat:variable")
    degrade.add_argument("output", help="output file, same forms as the input; refused if it exists (see --overwrite)")
    degrade.add_argument("--factor", type=_floats, required=True, help="per-axis factor, e.g. 1,1,4")
    degrade.add_argument(
        "--method", choices=("slice", "kspace", "gaussian", "bicubic"), default="slice",
        help="slice: thick slices along the one axis with a factor != 1; kspace: k-space truncation; "
             "gaussian: blur + decimation; bicubic: MATLAB imresize (antialiased)",
    )  # fmt: skip
    degrade.add_argument("--thickness", type=float, help="slice thickness in mm (slice method)")
    degrade.add_argument("--gap", type=float, default=0.0, help="slice gap in mm (slice method)")
    degrade.add_argument("--profile", choices=("gaussian", "box"), default="gaussian",
                         help="slice profile (slice method): Gaussian with FWHM = thickness, or a box")
    degrade.add_argument("--snr", type=float, help="add Rician noise at this SNR (dB)")
    degrade.add_argument("--seed", type=int, default=0, help="noise seed (--snr)")
    _add_output_options(degrade)
    _add_external_option(degrade)

    upsample = commands.add_parser("upsample", help="super-resolve a volume or cube")
    upsample.add_argument("input", help="input file: .nii/.nii.gz, .zarr, .hdr (ENVI), file.h5:/dataset or file.mat:variable")
    upsample.add_argument("output", help="output file: .zarr (OME-Zarr, any size), .h5:/key, .nii.gz, .mat:key or .hdr; "
                          "refused if it exists (see --overwrite, --resume)")
    grid = upsample.add_mutually_exclusive_group(required=True)
    grid.add_argument("--scale", type=_floats, help="per-axis factor (1,1,4) or one for all spatial axes")
    grid.add_argument("--target-spacing", type=_floats, help="output voxel size in mm, e.g. 1,1,1")
    upsample.add_argument("--model", help="registry name (see `volsr models`); default: best shipped")
    upsample.add_argument(
        "--chunks", type=_ints, help="output chunk shape, one per spatial axis (default 64)"
    )
    upsample.add_argument("--tile", type=_ints, help="output tile shape (default: fit --max-memory)")
    upsample.add_argument("--blend", choices=("exact", "gaussian"), default="exact",
                          help="exact: crop halos (default); gaussian: blend overlapping tiles")
    upsample.add_argument("--overlap", type=float, help="tile overlap for --blend gaussian (default 0.25)")
    where = upsample.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N", help="run on a local Dask cluster of N workers")
    where.add_argument("--scheduler", metavar="ADDR", help="run on the Dask scheduler at ADDR")
    upsample.add_argument("--resume", action="store_true", help="continue an interrupted run")
    upsample.add_argument("--max-memory", metavar="SIZE", help="memory budget of each worker (tiles are sized to fit it), e.g. 2G; default: half "
                               "the free memory divided among the local --workers, at least 1G each")
    upsample.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or cuda:N")
    upsample.add_argument("--layout", choices=("contiguous", "channels_last"),
                          help="memory layout of the network's convolutions (default: the model card's)")
    upsample.add_argument("--quiet", action="store_true", help="no plan, budget or progress bar")
    upsample.add_argument("--self-ensemble", action=argparse.BooleanOptionalAction, default=None,
                          help="average the model over flips and axis swaps (8 forwards for a "
                               "cube; default: the model card's, on for the shipped HSI networks)")
    upsample.add_argument("--check-halo", action="store_true",
                          help="first check the model's declared halo against its receptive field")
    acq = upsample.add_argument_group(
        "acquisition model (MRI volumes; default: a BIDS sidecar beside the input, else the header)")
    acq.add_argument("--thickness", type=float, metavar="MM",
                     help="slice thickness in mm (Gaussian FWHM or box width)")
    acq.add_argument("--gap", type=float, metavar="MM", help="gap between slices in mm (negative: overlapping)")
    acq.add_argument("--profile", choices=("gaussian", "box"), help="slice profile (default: gaussian)")
    acq.add_argument("--estimate-profile", action="store_true",
                     help="fit the Gaussian slice FWHM from the image's spectra (not with --thickness, --gap "
                          "or --profile box)")
    trust = upsample.add_argument_group("trust outputs (where not to believe the output)")
    trust.add_argument("--uncertainty", metavar="FILE",
                       help="also write the half-width of a calibrated 90 %% interval for |output - truth| per "
                            "output voxel (output grid and units); networks without a self-ensemble run 8 flips")
    trust.add_argument("--consistency", metavar="FILE",
                       help="also write the output re-acquired by the input's acquisition minus the input "
                            "(input grid and units) and log its RMS")
    trust.add_argument("--enforce-consistency", action="store_true",
                       help="deliver the nearest output that re-acquires to the input exactly (per-axis "
                            "least squares; see the model cards for when it helps)")
    tune = upsample.add_argument_group("self-supervised adaptation (MRI and hyperspectral networks)")
    tune.add_argument("--adapt", action="store_true",
                      help="first fine-tune the network on pairs cut from the input: its own in-plane axes (MRI), "
                           "the cube degraded again (cubes); kept only if it helps on a held-out region; a few "
                           "minutes on 2 CPU cores")
    tune.add_argument("--adapt-steps", type=int, metavar="N", help="fine-tune steps (default 220: about 3 minutes on 2 CPU cores; cubes 60)")
    tune.add_argument("--seed", type=int, default=0, help="seed of the adaptation's pairs (default 0)")
    tune.add_argument("--save-adapted", metavar="PATH.safetensors",
                      help="also write the adapted weights (+ JSON sidecar with their lineage) for --model PATH")
    upsample.add_argument("--pyramid", type=int, default=1, metavar="N",
                          help="write N OME-Zarr multiscale levels (.zarr output only): level 0 is the "
                               "full-resolution output, each further level halves every spatial axis "
                               "(2x block means; bands untouched)")
    upsample.add_argument("--force", action="store_true",
                          help="run at factors outside the model's trained range (with a warning)")
    _add_output_options(upsample)
    _add_external_option(upsample)

    bids = commands.add_parser(
        "bids", help="super-resolve every anatomical image of a BIDS dataset (BIDS-Apps style)")
    bids.add_argument("bids_dir", help="BIDS dataset root (with dataset_description.json)")
    bids.add_argument("output_dir", help="derivative dataset root, e.g. BIDS_DIR/derivatives/volsr")
    bids.add_argument("analysis_level", choices=("participant",), help="BIDS-Apps analysis level")
    bids.add_argument("--participant-label", nargs="+", metavar="LABEL",
                      help="only these subjects (01 or sub-01); default: all")
    bids_grid = bids.add_mutually_exclusive_group()
    bids_grid.add_argument("--scale", type=_floats, help="per-axis factor (1,1,4) or one for all spatial axes")
    bids_grid.add_argument("--target-spacing", type=_floats,
                           help="output voxel size in mm (default: isotropic at each image's finest voxel size)")
    bids.add_argument("--model", help="registry name (see `volsr models`); default: the best shipped for each image")
    bids.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda or cuda:N")
    bids.add_argument("--overwrite", action="store_true",
                      help="replace images made by other runs (options or source changed); a killed run "
                           "continues either way")
    bids.add_argument("--quiet", action="store_true", help="no per-image lines, plan, budget or progress bar")

    evaluate = commands.add_parser("evaluate", help="compare a prediction with a reference")
    evaluate.add_argument("--reference", required=True, help="ground truth (same forms as upsample's input)")
    evaluate.add_argument("--prediction", required=True, help="the volume to score, on the reference's grid")
    evaluate.add_argument("--mask", help="foreground mask file (non-zero = inside)")
    evaluate.add_argument("--scale", type=float, help="resolution ratio r (for ERGAS)")
    evaluate.add_argument(
        "--data-range",
        type=float,
        help="PSNR/SSIM data range (default: max - min of the reference, printed)",
    )
    evaluate.add_argument("--json", metavar="FILE", help="also write the metrics as JSON")
    evaluate.add_argument("--uncertainty", metavar="FILE",
                          help="a half-width map (upsample --uncertainty): also report its coverage, AUSE and "
                               "Spearman correlation with |error| (inside --mask, else everywhere)")
    _add_external_option(evaluate)

    models = commands.add_parser("models", help="list models with their factor ranges and cards")
    models.add_argument("--card", metavar="NAME", help="print the model card of model NAME")

    export = commands.add_parser(
        "export-weights", help="ship a training checkpoint as weights + model card (during a run)")
    export.add_argument("run_dir", help="run folder (run.output_dir of the config)")
    export.add_argument("name", help="<arch>_<tag> (mdcsrn_t1, meta_srgan_t1): registered as <arch>.<tag>")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--best", dest="which", action="store_const", const="best",
                       help="the best validated checkpoint (default)")
    which.add_argument("--last", dest="which", action="store_const", const="last",
                       help="the newest periodic checkpoint")
    export.set_defaults(which="best")
    export.add_argument("--weights-dir", help="destination (default: volsr/models/weights)")
    export.add_argument("--cards-dir", help="card folder (default: volsr/models/cards)")
    export.add_argument("--overwrite", action="store_true",
                        help="replace weights of that name (a hand-edited card is kept)")

    demo = commands.add_parser("demo", help="thick-slice ICBM152 -> upsample -> metrics + figure")
    demo.add_argument("outdir", nargs="?", default="volsr_demo", help="folder for the demo's files (default: volsr_demo)")
    demo.add_argument("--factor", type=float, default=4.0, help="slice factor")
    demo.add_argument("--overwrite", action="store_true", help="replace the demo's earlier files")

    train = commands.add_parser("train", help="train a network from a YAML config (configs/{mri,hsi}/<arch>/*.yaml)")
    train.add_argument("config", help="experiment YAML file (its data: volumes or cubes)")
    train.add_argument("--check", action="store_true",
                       help="validate the config, build its network and data, draw one batch; train nothing")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    train.add_argument("--max-steps", type=int, metavar="N", help="stop at step N (resume later)")
    train.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    train.add_argument("--threads", type=int, metavar="T", help="torch CPU threads")
    return parser


#: What an interrupted command leaves, where it is not "no output was written".
_AFTER_INTERRUPT = {
    "upsample": "finished tiles are kept: rerun the same command with --resume to continue",
    "train": "rerun with --resume to continue from the newest checkpoint",
    "bids": "finished images are kept: rerun the same command to continue",
}


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, line: str | None = None) -> str:
    """A warning as one ``volsr: warning:`` line (no source file or code line)."""
    return f"volsr: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status (0 success, 1 system failure, 2 user error).

    Raises
    ------
    SystemExit
        From argument parsing (status 2) or ``--help`` (status 0).

    Examples
    --------
    >>> main(["info", "does-not-exist.nii.gz"])  # doctest: +SKIP
    2
    """
    args = build_parser().parse_args(argv)
    from volsr import commands  # after parsing: --help stays fast
    from volsr.errors import VolsrError

    commands.take_notes()  # start from an empty buffer
    warnings.formatwarning = _one_line_warning
    try:
        result = getattr(commands, f"run_{args.command.replace('-', '_')}")(args)
    except KeyboardInterrupt:
        commands.take_notes()
        print(f"volsr {args.command}: interrupted ({_AFTER_INTERRUPT.get(args.command, 'no output was written')})",
              file=sys.stderr)
        return 130
    except (VolsrError, ValueError, KeyError, FileNotFoundError, PermissionError) as error:
        commands.take_notes()  # the error stays the only line on stderr
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        line = " ".join(str(message).split())  # one line, even for a multi-line parser message
        print(f"volsr {args.command}: error: {line}", file=sys.stderr)
        return 2
    except OSError as error:
        commands.take_notes()
        print(f"volsr {args.command}: system error: {error}", file=sys.stderr)
        return 1
    for note in commands.take_notes():
        print(note, file=sys.stderr)
    if result is not None:
        try:
            print(result if isinstance(result, str) else json.dumps(result, indent=2), flush=True)
        except BrokenPipeError:  # `volsr info x | head`: the reader left, nothing is wrong
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())

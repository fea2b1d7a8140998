"""Uniform weight soups: fine-tunes of one network averaged into one weights file.

Fine-tunes that start from the same weights stay in one basin of the loss, so the mean of
their weights is a network too, often better than each of them (the "uniform soup" of
Wortsman et al. 2022, Model soups, ICML). The shipped ``attn1d2d.x4`` is such a mean: of
two fine-tunes of its predecessor, one more of the stage-3 objective and one with the
spectral angle taken over whole spectra (see its model card).

Run: ``python -m volsr.train.soup OUT.safetensors --like WEIGHTS SOURCE SOURCE [...]``.
Sources are trainer checkpoints (their EMA weights when kept) or exported weights; the
output takes the constructor config and card of ``--like`` (a weights file of the same
network, e.g. the export of one of the runs) and records its sources in its metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from volsr.models.weights import read_sidecar, save_weights
from volsr.train.checkpoint import load_checkpoint, network_state, network_tensors

__all__ = ["soup_tensors", "write_soup", "main"]


def soup_tensors(sources: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the networks' weights in ``sources``.

    Parameters
    ----------
    sources : sequence of path-like
        At least two checkpoints or weights files of one architecture (same tensor names
        and shapes).

    Returns
    -------
    dict of str to Tensor
        The mean of each tensor (accumulated in float64, returned in the first source's
        dtype), on CPU.

    Raises
    ------
    ValueError
        If fewer than two sources are given, or their tensor names or shapes differ.
    FileNotFoundError
        If a source is missing.

    Examples
    --------
    >>> soup_tensors(["one.safetensors"])
    Traceback (most recent call last):
    ...
    ValueError: a soup needs at least two sources, got 1
    """
    _check_count(sources)
    return _mean([(str(source), network_tensors(source)) for source in sources])


def _check_count(sources: Sequence[object]) -> None:
    if len(sources) < 2:
        raise ValueError(f"a soup needs at least two sources, got {len(sources)}")


def _mean(states: Sequence[tuple[str, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    (first_name, first), *rest = states
    sums = {key: value.to(torch.float64) for key, value in first.items()}
    for name, tensors in rest:
        if tensors.keys() != sums.keys():
            raise ValueError(f"{name} holds other tensors than {first_name}: "
                             f"{sorted(tensors.keys() ^ sums.keys())[:3]} ...")
        for key, value in tensors.items():
            if value.shape != sums[key].shape:
                raise ValueError(f"{key} is {tuple(value.shape)} in {name} but "
                                 f"{tuple(sums[key].shape)} in {first_name}")
            sums[key] += value.to(torch.float64)
    return {key: (total / len(states)).to(first[key].dtype) for key, total in sums.items()}


def write_soup(out: str | os.PathLike, sources: Sequence[str | os.PathLike], *,
               like: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the soup of ``sources`` as weights with ``like``'s config and card.

    Parameters
    ----------
    out : path-like
        Destination ``.safetensors`` (its ``.json`` sidecar goes beside it).
    sources : sequence of path-like
        See :func:`soup_tensors`.
    like : path-like
        Weights file of the same network whose sidecar's ``config`` and ``card`` are taken
        (its ``input_peak`` too: souping runs trained on other cubes needs a card of its own).
    overwrite : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``; its sidecar's metadata lists the sources (``soup_of``: path, step and
        training config of each).

    Raises
    ------
    FileExistsError
        If ``out`` exists and ``overwrite`` is false.
    ValueError
        If the sources do not soup (:func:`soup_tensors`) or do not fit ``like``'s tensors.

    Examples
    --------
    See ``tests/train/test_soup.py``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (--overwrite, or overwrite=True, replaces it)")
    _check_count(sources)
    loaded = [load_checkpoint(source) for source in sources]  # each file read once
    soup = _mean([(str(source), network_state(tensors))
                  for source, (tensors, _) in zip(sources, loaded, strict=True)])
    reference = network_tensors(like)
    if {k: tuple(v.shape) for k, v in soup.items()} != {k: tuple(v.shape) for k, v in reference.items()}:
        raise ValueError(f"the sources' tensors do not fit {like}'s network")
    recorded = []
    for source, (_, meta) in zip(sources, loaded, strict=True):
        # An export's sidecar keeps the run's facts under "metadata"; a checkpoint at the top.
        facts = meta["metadata"] if isinstance(meta.get("metadata"), dict) else meta
        recorded.append({"source": str(source), "step": facts.get("step"),
                         "training_config": facts.get("training_config", facts.get("config"))})
    document = read_sidecar(like)
    return save_weights(soup, out, config=document["config"], card=document.get("card"),
                        metadata={"soup_of": recorded, "like": str(like)})


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m volsr.train.soup OUT --like WEIGHTS SOURCE SOURCE [...]``.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0, or 2 with a one-line error (missing, existing or unfitting files).

    Raises
    ------
    SystemExit
        On bad arguments (argparse).

    Examples
    --------
    >>> main(["out.safetensors", "a.safetensors", "--like", "a.safetensors"])
    2
    """
    parser = argparse.ArgumentParser(prog="python -m volsr.train.soup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", help="destination .safetensors")
    parser.add_argument("sources", nargs="+", help="checkpoints or weights files (two or more)")
    parser.add_argument("--like", required=True, help="weights file whose config and card are taken")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    try:
        path = write_soup(args.out, args.sources, like=args.like, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"volsr.train.soup: error: {error}", file=sys.stderr)  # noqa: T201 (CLI report)
        return 2
    print(f"wrote {path} (mean of {len(args.sources)})")  # noqa: T201 (CLI report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

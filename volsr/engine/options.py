"""How a run executes: one frozen :class:`EngineOptions` for the CLI, the API and Dask workers."""

from __future__ import annotations

import dataclasses

from volsr.engine.plan import DEFAULT_OVERLAP

__all__ = ["EngineOptions"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class EngineOptions:
    """How :func:`volsr.engine.upsample_to_store` runs (what it computes is its other arguments).

    Parameters
    ----------
    chunks : sequence of int, optional
        Output chunk shape (one per spatial axis, or one per array axis); default 64.
    tile : sequence of int, optional
        Output tile shape per spatial axis; default: from :func:`volsr.engine.plan.start_tile`
        (:data:`~volsr.engine.plan.MAX_TILE_EDGE` voxels per axis of the grid the model
        reads), shrunk by :func:`volsr.engine.plan.auto_tile` until it fits ``max_memory`` --
        independent of the volume's size, so peak memory is too.
    blend : {"exact", "gaussian"}
        ``exact`` crops halos; ``gaussian`` blends tiles overlapping by ``overlap``.
    overlap : float
        Tile overlap fraction in [0, 1) for ``gaussian``.
    workers : int, optional
        Run on a new local Dask cluster of this many worker processes.
    scheduler : str, optional
        Run on the Dask scheduler at this address (not with ``workers``).
    max_memory : str or int, optional
        Budget per worker (``"2G"``); picks tile and batch sizes. Default: half the memory
        free when the run starts, shared among local workers, at least 1 GiB
        (:func:`volsr.engine.progress.default_budget`); a resumed run keeps the budget it
        started with.
    device : str
        Where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
    layout : {"contiguous", "channels_last"}, optional
        Memory layout of the network's convolutions (:mod:`volsr.engine.layout`); default
        the one its card declares.
    self_ensemble : bool, optional
        Average the model over the flips and axis swaps of each tile
        (:class:`volsr.models.ensemble.SelfEnsemble`); default as the model's card says.
    force : bool
        Run at factors outside the model's ``scale_range`` with a warning instead of
        refusing them (:func:`volsr.engine.resolve.check_supported`).
    quiet : bool
        No plan line, budget line or progress bar.
    allow_external : bool
        Read HDF5 data held in other files (:func:`volsr.io.load`); refused by default.
    pyramid : int
        OME-Zarr multiscale levels, level 0 included (1: the full-resolution image only).
        Levels 1.. halve every spatial axis (2x block means, :mod:`volsr.engine.pyramid`;
        bands untouched), built chunk by chunk after the run and resumable; ``.zarr`` only,
        and every spatial axis needs ``2**(pyramid - 1)`` voxels.

    Raises
    ------
    ValueError
        If ``workers`` and ``scheduler`` are both given or ``workers`` is not a positive
        integer (the run itself checks the rest against its input and model).

    Examples
    --------
    >>> EngineOptions(chunks=(32, 32, 32), quiet=True).blend
    'exact'
    """

    chunks: tuple[int, ...] | None = None
    tile: tuple[int, ...] | None = None
    blend: str = "exact"
    overlap: float = DEFAULT_OVERLAP
    workers: int | None = None
    scheduler: str | None = None
    max_memory: str | int | None = None
    device: str = "cpu"
    layout: str | None = None
    self_ensemble: bool | None = None
    force: bool = False
    quiet: bool = False
    allow_external: bool = False
    pyramid: int = 1

    def __post_init__(self) -> None:
        if self.workers is not None and self.scheduler is not None:
            raise ValueError(f"give at most one of workers and scheduler, got workers={self.workers!r}, "
                             f"scheduler={self.scheduler!r}")  # fmt: skip
        if self.workers is not None and (isinstance(self.workers, bool) or not isinstance(self.workers, int)
                                         or self.workers < 1):  # fmt: skip
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        for name in ("chunks", "tile"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "device", str(self.device))

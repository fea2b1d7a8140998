"""A torch ``IterableDataset`` of ready-made training batches from a :class:`PatchSampler`.

Why ready-made batches rather than items plus a batch sampler: the items of a batch must
share one (factor, slice axis) draw, because the LR shape and the ``positions`` handed to
``model(lr, positions)`` (one 1-D array per axis for the whole batch) depend on it. The
dataset draws that once per batch and collates the items with ``default_collate``; use it
with ``DataLoader(dataset, batch_size=None, num_workers=...)``. A batch sampler over a
map-style dataset would need a side channel to pass the shared draw to ``__getitem__``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from volsr.data._options import positive_ints
from volsr.data.sampler import PatchSampler

__all__ = ["PatchDataset"]


class PatchDataset(IterableDataset):
    """A torch ``IterableDataset`` of ready-made batches from a :class:`PatchSampler`.

    Use it with ``DataLoader(dataset, batch_size=None, num_workers=...)``. Each worker
    draws from its own ``np.random.default_rng(SeedSequence([seed, epoch, worker_id]))``,
    so workers yield different batches and a run is reproducible for a fixed worker count.
    The sampler is pickled to spawned workers without file handles or cached blocks (forked
    workers drop the inherited ones), and reopens its volumes by path.

    Parameters
    ----------
    sampler : PatchSampler
        Where the pairs come from.
    batch_size : int
        Items per batch (>= 1), all sharing one (factor, slice axis) draw.
    seed : int
        Base seed (>= 0).
    batches_per_epoch : int, optional
        Batches per epoch over all workers (worker ``w`` of ``W`` yields those with index
        ``w mod W``); None: endless.

    Raises
    ------
    ValueError
        If ``batch_size``, ``seed`` or ``batches_per_epoch`` is out of range.

    Examples
    --------
    >>> from volsr.data import SamplerOptions
    >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
    >>> data = PatchDataset(s, batch_size=2, seed=0, batches_per_epoch=3)
    >>> [tuple(b["hr"].shape) for b in data] == [(2, 1, 8, 8, 8)] * 3
    True
    """

    def __init__(
        self,
        sampler: PatchSampler,
        *,
        batch_size: int,
        seed: int,
        batches_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        (self.batch_size,) = positive_ints((batch_size,), "batch_size", 1, minimum=1)
        (self.seed,) = positive_ints((seed,), "seed", 1, minimum=0)
        self.batches_per_epoch = None
        if batches_per_epoch is not None:
            (self.batches_per_epoch,) = positive_ints(
                (batches_per_epoch,), "batches_per_epoch", 1, minimum=1
            )
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch that seeds the next iteration (call before each epoch).

        Parameters
        ----------
        epoch : int
            Epoch number (>= 0). Persistent DataLoader workers keep the epoch they were
            started with; create the iterator anew (the default) for this to take effect.

        Returns
        -------
        None

        Raises
        ------
        ValueError
            If ``epoch`` is negative or not an integer.

        Examples
        --------
        >>> from volsr.data import SamplerOptions
        >>> s = PatchSampler([np.ones((20, 20, 20))], SamplerOptions(patch_shape=(8, 8, 8), factor_range=(2, 2)))
        >>> d = PatchDataset(s, batch_size=1, seed=0); d.set_epoch(3); d.epoch
        3
        """
        (self.epoch,) = positive_ints((epoch,), "epoch", 1, minimum=0)

    def __len__(self) -> int:
        if self.batches_per_epoch is None:
            raise TypeError("an endless PatchDataset (batches_per_epoch=None) has no length")
        return self.batches_per_epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, worker]))
        count = None
        if self.batches_per_epoch is not None:
            count = len(range(worker, self.batches_per_epoch, workers))
        produced = 0
        while count is None or produced < count:
            yield self.sampler.sample_batch(rng, batch_size=self.batch_size)
            produced += 1

"""Inference engine: from a volume and a model to an upsampled volume, in or out of core.

- :func:`upsample`: a lazy Volume (the engine's tasks as a dask graph).
- :func:`upsample_to_store`: any size, into a chunked store, resumable, in-process or on
  a Dask cluster, with any registry model or your own ``nn.Module`` with a ``card``.
- :class:`EngineOptions`: how a run executes; :class:`TrustOptions`: its extra outputs.
- :func:`check_halo`: checks a model's declared halo against its receptive field.
"""

from volsr.engine.halo import check_halo
from volsr.engine.options import EngineOptions
from volsr.engine.store import upsample_to_store
from volsr.engine.trust import TrustOptions
from volsr.engine.upsample import upsample

__all__ = ["upsample", "upsample_to_store", "EngineOptions", "TrustOptions", "check_halo"]

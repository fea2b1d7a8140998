"""Inference engine: from a volume and a model to an upsampled volume."""

from volsr.engine.upsample import upsample

__all__ = ["upsample"]

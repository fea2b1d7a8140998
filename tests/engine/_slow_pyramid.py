"""Subprocess body for the pyramid kill tests: a linear upsampling into a 4-level store.

argv: OUTPUT MODE DELAY; MODE is ``fresh`` or ``resume``; DELAY seconds per pyramid chunk.
"""

import sys
import time

import numpy as np

from volsr.engine import EngineOptions, pyramid, upsample_to_store
from volsr.volume import Volume

_block_mean = pyramid.block_mean


def _slow_block_mean(block, spatial, *args, **kwargs):
    time.sleep(float(sys.argv[3]))
    return _block_mean(block, spatial, *args, **kwargs)


if __name__ == "__main__":
    pyramid.block_mean = _slow_block_mean
    data = np.random.default_rng(5).random((16, 16, 8), dtype=np.float32)
    upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), sys.argv[1], scale=(1, 1, 2), model="linear",
                      resume=sys.argv[2] == "resume",
                      options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True, pyramid=4))

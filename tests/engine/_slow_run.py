"""Subprocess body for the kill tests: a slow linear model into a store.

argv: OUTPUT MODE DELAY [SEED]; MODE is ``fresh``, ``resume`` or ``overwrite``.
"""

import sys
import time

import numpy as np

from volsr.engine import EngineOptions, upsample_to_store
from volsr.models import get_card
from volsr.models.interpolation import SeparableInterpolation
from volsr.volume import Volume


class Slow(SeparableInterpolation):
    def forward(self, x, positions):
        time.sleep(float(sys.argv[3]))
        return super().forward(x, positions)


if __name__ == "__main__":
    net = Slow(method="linear")
    net.card = get_card("linear")
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    data = np.random.default_rng(seed).random((16, 16, 8), dtype=np.float32)
    mode = sys.argv[2]
    upsample_to_store(Volume(data, np.eye(4), ("i", "j", "k")), sys.argv[1], scale=(1, 1, 2), model=net,
                      resume=mode == "resume", overwrite=mode == "overwrite",
                      options=EngineOptions(chunks=(4, 4, 4), tile=(4, 4, 4), quiet=True))

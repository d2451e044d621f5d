"""Learning-rate schedules shared by the training modules."""

from __future__ import annotations

import math


class CosineToZero:
    """LambdaLR factor: half a cosine from 1 to 0 over `total` updates (a picklable callable, so the
    scheduler's state survives a checkpoint)."""

    def __init__(self, total: int | float):
        self.total = max(int(total), 1)

    def __call__(self, step: int) -> float:
        return 0.5 * (1 + math.cos(math.pi * min(step, self.total) / self.total))

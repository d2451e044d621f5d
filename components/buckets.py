"""Mask-ratio buckets: the paper reports results for masks covering 0-10, 10-20, 20-30, 30-40 %."""

from __future__ import annotations

import bisect


def bucket_labels(edges: list[float]) -> list[str]:
    """Labels such as '0-10' for edges [0.0, 0.1, ...] (percent, rounded)."""
    return [f"{round(lo * 100):d}-{round(hi * 100):d}" for lo, hi in zip(edges, edges[1:])]


def bucket_of(ratio: float, edges: list[float]) -> str | None:
    """The label of the bucket [lo, hi) holding `ratio`; the last bucket includes its upper edge.

    None when the ratio lies outside all buckets.
    """
    if ratio < edges[0] or ratio > edges[-1]:
        return None
    index = min(bisect.bisect_right(edges, ratio) - 1, len(edges) - 2)
    return bucket_labels(edges)[index]

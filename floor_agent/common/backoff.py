"""How long to wait before trying again after failures (reconnects, uploads)."""

from __future__ import annotations


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """Exponential: initial, 2x, 4x ... capped at maximum; `failures` (or the attempt number)
    counts from 1."""
    return min(maximum, initial * (1 << max(0, failures - 1)))  # 2**n, typed int

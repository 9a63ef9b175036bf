"""splitmix64, the same stream as reference.SplitMix64 (state advances by the golden gamma)."""

from __future__ import annotations

import numpy as np

from balloonreplay.engine.flags import jit

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S30 = np.uint64(30)
S27 = np.uint64(27)
S31 = np.uint64(31)


@jit
def mix64(z):
    z = (z ^ (z >> S30)) * MIX1
    z = (z ^ (z >> S27)) * MIX2
    return z ^ (z >> S31)


@jit
def next_below(rng, stream, n):
    """Advance stream `stream` of the state array and return next() % n as int64."""
    state = rng[stream] + GOLDEN
    rng[stream] = state
    return np.int64(mix64(state) % np.uint64(n))


def seed_streams(seed: int, count: int) -> np.ndarray:
    """Initial states, stream i = mix64(seed ^ ((i + 1) * golden)), as in the reference."""
    from balloonreplay.reference import GOLDEN as G
    from balloonreplay.reference import MASK64
    from balloonreplay.reference import mix64 as py_mix64

    return np.array(
        [py_mix64((seed ^ ((i + 1) * G)) & MASK64) for i in range(count)], dtype=np.uint64
    )

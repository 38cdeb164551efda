"""Signals shared by the eval tests."""

import numpy as np


def tone(seconds: float, sr: int, freq: float, seed: int, noise: float = 0.05) -> np.ndarray:
    """Mono ``[1, T]`` sine plus a little seeded noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)[None]

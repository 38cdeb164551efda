"""Caption assignment from top-K lists: Noise2Music's inverse-frequency sampling (arXiv 2302.03917, section 3.3).

For each clip and vocabulary the top-K entries (by CLAP score) are candidates; ``K'`` of them are drawn without
replacement with probability proportional to ``1 / count(entry)``, where ``count`` is how many top-K lists of the whole
label set contain the entry (a global count pass). This balances the labels: an entry that is near every clip (a generic
sentence) is rarely picked, while a distinctive one wins its few clips.

Sampling uses Efraimidis & Spirakis (2006) weighted reservoir keys ``u^(1/w)`` (computed as ``log(u) / w``): taking the
``K'`` largest keys is distributed exactly as ``K'`` successive draws without replacement, each proportional to the
remaining weights. The random stream of a (seed, vocabulary, clip key) triple is derived from those three values alone,
so labels are reproducible and independent of shard order, worker count and runner.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np


def count_topk(topk_lists: Iterable[np.ndarray], vocab_size: int) -> np.ndarray:
    """Global count pass: ``counts[j]`` = number of top-K lists (rows of the ``[n, K]`` id arrays) holding entry ``j``.

    Returns int64 ``[vocab_size]``. An entry is counted once per list (lists hold distinct ids; -1 padding ignored).
    """
    counts = np.zeros(vocab_size, np.int64)
    for ids in topk_lists:
        flat = ids[ids >= 0]
        counts += np.bincount(flat, minlength=vocab_size)
    return counts


def rng_for(seed: int, vocab: str, key: str) -> np.random.Generator:
    """The random stream of one (seed, vocabulary, clip key): a PCG64 seeded from a SHA-256 of the three."""
    digest = hashlib.sha256(f"{int(seed)}\x00{vocab}\x00{key}".encode()).digest()
    return np.random.Generator(np.random.PCG64(np.frombuffer(digest, dtype=np.uint32)))


def sample_inverse_frequency(ids: np.ndarray, counts: np.ndarray, k_prime: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``min(k_prime, len(ids))`` of ``ids`` without replacement, ``P`` proportional to ``1 / counts[id]``.

    ``ids``: int ``[K]`` (the clip's top-K, ``-1`` padding ignored). Returns the drawn ids in draw order (the first
    element is a single draw with ``P_i = w_i / sum(w)``).
    """
    ids = ids[ids >= 0]
    if ids.size == 0 or k_prime <= 0:
        return ids[:0]
    weights = 1.0 / np.maximum(counts[ids], 1).astype(np.float64)
    u = rng.random(ids.size)
    keys = np.log(np.maximum(u, np.finfo(np.float64).tiny)) / weights  # log of u^(1/w): same order
    order = np.argsort(-keys, kind="stable")[:k_prime]
    return ids[order]


def assign(keys: list[str], topk_ids: np.ndarray, counts: np.ndarray, k_prime: int, seed: int, vocab: str) -> list[
        np.ndarray]:
    """Sampled entry ids per clip: ``keys`` ``[n]``, ``topk_ids`` ``[n, K]`` -> list of ``[<=K']`` id arrays."""
    return [sample_inverse_frequency(row, counts, k_prime, rng_for(seed, vocab, key)) for key, row in zip(keys, topk_ids)]

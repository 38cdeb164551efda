"""The CLAP score: Noise2Music's "MuLan score" (arXiv 2302.03917, Section 5) with LAION CLAP in place of MuLan.

The score of a set is the mean cosine similarity between each audio clip's embedding and the embedding of *its own*
prompt; audio and prompts are paired by id (audio file stem == prompt id), never by the order of a listing. Beside it:

- a shuffled-prompt baseline: the same audio scored against a seeded derangement of the prompts (no clip keeps its
  own prompt), i.e. what the score is for audio unrelated to its text;
- the ground-truth-audio score (the paper's "MuLan gt-audio" column): cosine between each generated clip and the
  reference recording of the same id, and the references' own text score (the paper's "Ground truth" row).

:func:`bootstrap_mean` gives the percentile interval of a mean of per-item values (items resampled), used for these
scores and for the musicnn adherence figures (:mod:`n2m.eval.adherence`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``[N, D]`` and ``[N, D]`` -> ``[N]`` (float64)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(norms, 1e-12)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random cyclic permutation of ``range(n)`` (Sattolo's algorithm): ``perm[i] != i`` for every i."""
    if n < 2:
        raise ValueError("a derangement needs at least two items")
    perm = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(rng.integers(0, i))
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def bootstrap_mean(values: np.ndarray, reps: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the mean of per-item ``values`` ``[N]``:
    ``reps`` resamples of the N items with replacement, seeded; ``(low, high)`` at ``level`` coverage."""
    v = np.asarray(values, np.float64)
    if v.ndim != 1 or v.size < 2 or reps < 1:
        raise ValueError("a bootstrap interval needs at least two items and one resample")
    means = v[np.random.default_rng(seed).integers(0, v.size, size=(reps, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedScore:
    """Mean cosine over ``ids`` (sorted) with per-item values; ``missing_*`` are ids present on one side only."""

    mean: float
    std: float
    ids: tuple[str, ...]
    values: tuple[float, ...]
    missing_audio: tuple[str, ...]
    missing_target: tuple[str, ...]
    shuffled_mean: float | None = None
    shuffled_values: tuple[float, ...] = ()
    seed: int | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    def as_dict(self, per_item: bool = True) -> dict:
        out = {"mean": self.mean, "std": self.std, "n": self.n, "shuffled_mean": self.shuffled_mean,
               "seed": self.seed, "missing_audio": list(self.missing_audio), "missing_target": list(self.missing_target)}
        if per_item:
            out["per_item"] = dict(zip(self.ids, self.values))
            out["shuffled_values"] = list(self.shuffled_values)
        return out


def paired_score(audio: dict[str, np.ndarray], targets: dict[str, np.ndarray], shuffled: bool = True,
                 seed: int = 0) -> PairedScore:
    """Mean cosine between ``audio[id]`` ``[D]`` and ``targets[id]`` ``[D]`` over the ids both hold; with the
    shuffled baseline (targets permuted by a seeded derangement) when ``shuffled`` and there are two or more pairs."""
    ids = sorted(set(audio) & set(targets))
    if not ids:
        raise ValueError("no audio id matches a target id (audio file stems must equal prompt ids)")
    a = np.stack([audio[i] for i in ids])
    t = np.stack([targets[i] for i in ids])
    values = cosine(a, t)
    shuffled_values: np.ndarray | None = None
    if shuffled and len(ids) >= 2:
        shuffled_values = cosine(a, t[derangement(len(ids), np.random.default_rng(seed))])
    return PairedScore(
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if len(ids) > 1 else 0.0,
        ids=tuple(ids),
        values=tuple(float(v) for v in values),
        missing_audio=tuple(sorted(set(targets) - set(audio))),
        missing_target=tuple(sorted(set(audio) - set(targets))),
        shuffled_mean=None if shuffled_values is None else float(shuffled_values.mean()),
        shuffled_values=() if shuffled_values is None else tuple(float(v) for v in shuffled_values),
        seed=seed if shuffled_values is not None else None,
    )

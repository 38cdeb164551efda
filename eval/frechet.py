"""Fréchet distance between Gaussians fitted to embeddings: FAD, FAD-inf, per-song FAD and a bootstrap interval.

FAD (Kilgour et al. 2019, arXiv 1812.08466) is the Fréchet (2-Wasserstein) distance between Gaussians fitted to two sets
of embeddings (Dowson & Landau 1982):

    FD = |mu_1 - mu_2|^2 + tr(S_1) + tr(S_2) - 2 tr((S_1 S_2)^(1/2))

Means and covariances are accumulated in float64. ``tr((S_1 S_2)^(1/2))`` is computed twice: with scipy's ``sqrtm`` of
the (non-symmetric) product, and from the eigenvalues of the symmetric PSD matrix ``S_1^(1/2) S_2 S_1^(1/2)``, which has
the same spectrum as ``S_1 S_2`` (so the trace of its square root is ``sum(sqrt(eigvalsh))``, always real). The
eigendecomposition result is reported; the two are compared and a disagreement is a warning. A negative or complex
value is never reported as valid.

FAD-inf (Gui et al. 2024, arXiv 2311.01616, "Adapting Fréchet Audio Distance for generative music evaluation"): FD is
biased by about ``c / n`` for ``n`` samples, so FD is measured on seeded random subsets of several sizes, fitted by least
squares against ``1 / n`` and extrapolated to ``1 / n = 0``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

# Relative tolerance between the two matrix-square-root paths, measured on tr(sqrt(S_1 S_2)).
SQRT_RTOL = 1e-4
# A negative FD no larger than this fraction of tr(S_1) + tr(S_2) is rounding and is reported as 0.
NEGATIVE_RTOL = 1e-9


class FrechetWarning(UserWarning):
    """The two matrix-square-root methods disagree, or the result needed clamping."""


# ---------------------------------------------------------------------------------------------------------------------
# Statistics


@dataclass(frozen=True)
class Stats:
    """Gaussian statistics of a set of embeddings: ``n`` rows, ``mean`` ``[D]`` and ``cov`` ``[D, D]`` (float64, ddof=1).

    A set with a single row has a zero covariance (a point mass). ``factor`` ``[k, D]``, when known and ``k < D``, is
    a matrix with ``cov = factor^T factor`` (the centred rows over ``sqrt(n - 1)``): it makes the trace term cheap.
    """

    n: int
    mean: np.ndarray
    cov: np.ndarray
    factor: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


class StatsAccumulator:
    """Streaming mean and covariance in float64 with Chan et al.'s pairwise update (no ``E[x^2] - E[x]^2`` cancellation).

    ``update(x)`` takes a batch ``[N, D]``; the result does not depend on the order of rows or batches (up to rounding).
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros((dim, dim), np.float64)  # sum of outer products of deviations from the mean

    def update(self, x: np.ndarray) -> StatsAccumulator:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected [N, {self.dim}] embeddings, got shape {x.shape}")
        n_b = x.shape[0]
        if n_b == 0:
            return self
        mean_b = x.mean(axis=0)
        centred = x - mean_b
        m2_b = centred.T @ centred
        total = self.n + n_b
        delta = mean_b - self.mean
        self.m2 += m2_b + np.outer(delta, delta) * (self.n * n_b / total)
        self.mean = self.mean + delta * (n_b / total)
        self.n = total
        return self

    def stats(self) -> Stats:
        if self.n == 0:
            raise ValueError("no embeddings were accumulated")
        cov = self.m2 / (self.n - 1) if self.n > 1 else np.zeros_like(self.m2)
        return Stats(self.n, self.mean.copy(), (cov + cov.T) / 2)


def stats_of(x: np.ndarray) -> Stats:
    """Statistics of embeddings ``[N, D]`` (with the low-rank ``factor`` when ``N <= D``)."""
    x = np.asarray(x)
    stats = StatsAccumulator(x.shape[1]).update(x).stats()
    if x.shape[0] <= x.shape[1]:
        factor = (np.asarray(x, np.float64) - stats.mean) / np.sqrt(max(x.shape[0] - 1, 1))
        stats = Stats(stats.n, stats.mean, stats.cov, factor)
    return stats


def stats_from_sums(n: int, total: np.ndarray, outer: np.ndarray) -> Stats:
    """Statistics from ``n``, ``sum x`` ``[D]`` and ``sum x x^T`` ``[D, D]`` (the sum-reducible form used by metrics)."""
    if n <= 0:
        raise ValueError("no embeddings were accumulated")
    total = np.asarray(total, np.float64)
    mean = total / n
    if n == 1:
        return Stats(1, mean, np.zeros((mean.size, mean.size)))
    cov = (np.asarray(outer, np.float64) - n * np.outer(mean, mean)) / (n - 1)
    return Stats(int(n), mean, (cov + cov.T) / 2)


# ---------------------------------------------------------------------------------------------------------------------
# Fréchet distance


@dataclass(frozen=True)
class FrechetResult:
    """``value`` is the reported FD (eigendecomposition path), or None when no valid value exists.

    ``value_sqrtm`` is the same distance with scipy's ``sqrtm`` (None when that path failed or was skipped).
    ``value`` uses :func:`trace_sqrt` (eigendecomposition of a symmetric PSD matrix: always real).
    """

    value: float | None
    valid: bool
    value_sqrtm: float | None
    mean_term: float
    trace_term: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {"value": self.value, "valid": self.valid, "value_sqrtm": self.value_sqrtm, "mean_term": self.mean_term,
                "trace_term": self.trace_term, "notes": list(self.notes)}


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by ``eigh`` (tiny negative eigenvalues from rounding are clipped to 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_eig(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """``tr((S_1 S_2)^(1/2))`` as ``sum(sqrt(eig(S_1^(1/2) S_2 S_1^(1/2))))`` (symmetric PSD, so real)."""
    root = _psd_sqrt(cov1)
    inner = root @ cov2 @ root
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def trace_sqrt(a: Stats, b: Stats) -> float:
    """``tr((S_a S_b)^(1/2))`` by the cheapest exact route. With factors ``S = F^T F`` (``k`` rows, ``k < D``), the
    non-zero spectrum of ``S_a S_b`` is that of ``F_a S_b F_a^T`` (``k x k``, symmetric PSD), and with both factors
    the trace is the nuclear norm of ``F_a F_b^T``; otherwise :func:`trace_sqrt_eig` on ``D x D``."""
    fa = a.factor if a.factor is not None and a.factor.shape[0] < a.dim else None
    fb = b.factor if b.factor is not None and b.factor.shape[0] < b.dim else None
    if fa is not None and fb is not None:
        return float(np.linalg.svd(fa @ fb.T, compute_uv=False).sum())
    if fa is None and fb is None:
        return trace_sqrt_eig(a.cov, b.cov)
    factor, cov = (fa, b.cov) if fa is not None else (fb, a.cov)
    inner = factor @ cov @ factor.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())


def trace_sqrt_scipy(cov1: np.ndarray, cov2: np.ndarray) -> tuple[float | None, str | None]:
    """``tr(sqrtm(S_1 S_2))`` with scipy; retries with ``eps * I`` added when singular (as pytorch-fid does).

    Returns ``(trace, note)``; trace is None when the result is not finite or has a non-negligible imaginary part.
    """
    note = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(root).all():
            eps = 1e-6 * max(np.trace(cov1), np.trace(cov2), 1e-12) / cov1.shape[0]
            offset = np.eye(cov1.shape[0]) * eps
            root = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
            note = f"scipy sqrtm needed an offset of {eps:.3g} on the diagonal (singular product)"
    if not np.isfinite(root).all():
        return None, "scipy sqrtm returned non-finite values"
    if np.iscomplexobj(root):
        trace = np.trace(root)
        worst = float(np.abs(np.diagonal(root).imag).max())
        if worst > 1e-3 * max(abs(trace.real), 1.0):  # pytorch-fid's test (atol 1e-3), relative to the trace
            return None, f"scipy sqrtm has an imaginary diagonal part up to {worst:.3g}"
        return float(trace.real), note
    return float(np.trace(root)), note


def frechet_distance(a: Stats, b: Stats, check: bool = True) -> FrechetResult:
    """FD between the Gaussians of ``a`` and ``b``. ``check`` also runs scipy ``sqrtm`` and compares the two paths."""
    if a.dim != b.dim:
        raise ValueError(f"embedding sizes differ: {a.dim} vs {b.dim}")
    notes: list[str] = []
    diff = a.mean - b.mean
    mean_term = float(diff @ diff)
    traces = float(np.trace(a.cov) + np.trace(b.cov))
    tr_eig = trace_sqrt(a, b)
    fd = mean_term + traces - 2.0 * tr_eig
    fd_sqrtm = None
    if check:
        tr_sp, note = trace_sqrt_scipy(a.cov, b.cov)
        if note:
            notes.append(note)
        if tr_sp is not None:
            fd_sqrtm = mean_term + traces - 2.0 * tr_sp
            if abs(tr_sp - tr_eig) > SQRT_RTOL * max(abs(tr_eig), 1e-12):
                msg = (f"matrix square roots disagree: tr sqrt = {tr_eig:.6g} (eigendecomposition) vs {tr_sp:.6g} "
                       f"(scipy sqrtm); FD {fd:.6g} vs {fd_sqrtm:.6g}")
                notes.append(msg)
                warnings.warn(msg, FrechetWarning, stacklevel=2)
    valid = math.isfinite(fd)
    if valid and fd < 0:
        if fd >= -NEGATIVE_RTOL * max(traces + mean_term, 1e-300):
            notes.append(f"rounding gave {fd:.3g}; reported as 0")
            fd = 0.0
        else:
            valid = False
            msg = f"negative Fréchet distance {fd:.6g}: the statistics are inconsistent; not reported"
            notes.append(msg)
            warnings.warn(msg, FrechetWarning, stacklevel=2)
    return FrechetResult(fd if valid else None, valid, fd_sqrtm, mean_term, traces - 2.0 * tr_eig, tuple(notes))


# ---------------------------------------------------------------------------------------------------------------------
# FAD-inf, per-song FAD, bootstrap


@dataclass(frozen=True)
class FadInf:
    """Least-squares fit ``FD(n) = value + slope / n`` over ``points`` ``[(n, FD)]``; ``value`` is FAD-inf."""

    value: float
    slope: float
    r2: float
    points: tuple[tuple[int, float], ...]
    seed: int

    def as_dict(self) -> dict:
        return {"value": self.value, "slope": self.slope, "r2": self.r2, "seed": self.seed,
                "points": [list(p) for p in self.points]}


def default_sizes(n: int, count: int = 15, min_n: int | None = None) -> list[int]:
    """``count`` subset sizes evenly spaced in ``1 / n`` between ``min_n`` (default ``n // 10``, at least 2) and ``n``."""
    low = max(2, min_n if min_n is not None else n // 10)
    if n < 2 * low:
        raise ValueError(f"FAD-inf needs more embeddings than {n}")
    inv = np.linspace(1.0 / low, 1.0 / n, count)
    return sorted({int(round(1.0 / v)) for v in inv})


def fad_inf(reference: Stats, embeddings: np.ndarray, sizes: Sequence[int] | None = None, seed: int = 0,
            reps: int = 1) -> FadInf:
    """FAD-inf of ``embeddings`` ``[N, D]`` against ``reference``: FD of seeded subsets (without replacement) of each size,
    ``reps`` times each, fitted against ``1 / n`` and extrapolated to ``1 / n = 0``."""
    embeddings = np.asarray(embeddings)
    n_total = embeddings.shape[0]
    sizes = list(sizes) if sizes is not None else default_sizes(n_total)
    if any(s > n_total or s < 2 for s in sizes):
        raise ValueError(f"subset sizes must lie in [2, {n_total}]: {sizes}")
    rng = np.random.default_rng(seed)
    points: list[tuple[int, float]] = []
    for size in sizes:
        for _ in range(reps):
            rows = rng.choice(n_total, size=size, replace=False)
            result = frechet_distance(reference, stats_of(embeddings[rows]), check=False)
            if result.valid:
                points.append((int(size), float(result.value)))
    if len({p[0] for p in points}) < 2:
        raise ValueError("FAD-inf needs valid FD values at two or more subset sizes")
    x = np.array([1.0 / p[0] for p in points])
    y = np.array([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (intercept + slope * x)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return FadInf(float(intercept), float(slope), r2, tuple(points), seed)


def per_song(reference: Stats, songs: Sequence[np.ndarray]) -> list[FrechetResult]:
    """FD of each song's own embeddings ``[F_i, D]`` against ``reference`` (one row: a point mass, zero covariance)."""
    return [frechet_distance(reference, stats_of(song), check=False) for song in songs]


@dataclass(frozen=True)
class Bootstrap:
    """Percentile bootstrap interval of FD over ``reps`` resamples of whole files (both sets), ``level`` coverage."""

    low: float
    high: float
    std: float
    reps: int
    level: float
    seed: int

    def as_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "std": self.std, "reps": self.reps, "level": self.level,
                "seed": self.seed}


def _weighted_stats(frames: np.ndarray, weights: np.ndarray) -> Stats:
    """Statistics of ``frames`` ``[N, D]`` where row ``i`` is counted ``weights[i]`` times (with the factor
    ``sqrt(w_i) (x_i - mean) / sqrt(W - 1)`` over the drawn rows when there are fewer of them than ``D``)."""
    total = weights.sum()
    mean = weights @ frames / total
    drawn = weights > 0
    scaled = (frames[drawn] - mean) * np.sqrt(weights[drawn] / max(total - 1, 1))[:, None]
    factor = scaled if scaled.shape[0] < frames.shape[1] else None
    return Stats(int(total), mean, scaled.T @ scaled, factor)


def bootstrap(reference_files: Sequence[np.ndarray], generated_files: Sequence[np.ndarray], reps: int = 200,
              level: float = 0.95, seed: int = 0) -> Bootstrap:
    """Bootstrap interval of FD: both sets are resampled by whole files with replacement (frames of a file are
    correlated, so files are the independent units), ``reps`` times, seeded."""
    rng = np.random.default_rng(seed)
    sides = []
    for files in (reference_files, generated_files):
        frames = np.concatenate([np.asarray(f, np.float64) for f in files])
        owner = np.repeat(np.arange(len(files)), [len(f) for f in files])
        sides.append((frames, owner, len(files)))
    values = []
    for _ in range(reps):
        stats = []
        for frames, owner, count in sides:
            picks = np.bincount(rng.integers(0, count, size=count), minlength=count).astype(np.float64)
            stats.append(_weighted_stats(frames, picks[owner]))
        result = frechet_distance(stats[0], stats[1], check=False)
        if result.valid:
            values.append(result.value)
    if len(values) < max(2, reps // 2):
        raise ValueError(f"only {len(values)} of {reps} bootstrap resamples gave a valid FD")
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return Bootstrap(float(low), float(high), float(np.std(values, ddof=1)), len(values), level, seed)

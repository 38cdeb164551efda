"""Samplers for variance-preserving diffusion models: pure functions of a denoiser that predicts ``eps`` and ``x0``.

Every sampler is a pure function with one signature (the k-diffusion convention, Crowson 2022)::

    sample_x(denoise, x, steps, cond, *, clip=None, generator=None, callback=None, **options) -> x_0

- ``denoise(x_t, t, cond) -> Prediction``: ``x_t`` ``[B, C, T]``, ``t`` ``[B]`` the model's continuous time in [0, 1],
  ``cond`` whatever the model takes (a mapping of batch-first tensors, or ``None``); returns ``eps_hat`` and ``x0_hat``
  ``[B, C, T]`` each (:class:`n2m.training.diffusion.denoiser.Prediction`: the denoiser converts its network's output, so
  the parametrisation lives there and nowhere here). Classifier-free guidance and windowing are wrappers of this
  function (:mod:`n2m.training.diffusion.guidance`, :mod:`n2m.training.windowing`), so every sampler gets them for free.
- ``x``: the starting noise ``x_T`` ``[B, C, T]``, drawn by the caller (seeded there).
- ``steps``: a :class:`Steps`, the discretisation: times ``t_0 = t_max > ... > t_N = 0`` with their ``alpha_bar``.
- ``clip``: a transform of the predicted ``x_0`` (Imagen's dynamic clipping); the ``eps`` used by the update is
  recomputed from the clipped ``x_0`` so that the two stay consistent (Saharia et al. 2022, section 2.3).
- ``generator``: a ``torch.Generator``, or one per example (see :func:`noise_like`), for the noise a stochastic
  sampler adds; ``callback(info)`` is called after every step with ``{"i", "t", "x", "x0"}``.

The forward process is ``x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps`` (DDPM, Ho et al. 2020), ``ab = alpha_bar``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from n2m.training.diffusion.denoiser import Prediction

Cond = Any  # a Mapping or a dataclass of batch-first tensors (e.g. n2m.training.diffusion.denoiser.Conditioning), or None
Denoiser = Callable[[torch.Tensor, torch.Tensor, Cond], Prediction]
Clip = Callable[[torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None]
Generators = torch.Generator | Sequence[torch.Generator] | None


def map_cond(fn: Callable[..., Any], cond: Cond, *others: Cond) -> Cond:
    """Apply ``fn(name, value, *other_values)`` to every tensor field of ``cond`` (a Mapping or a dataclass).

    Non-tensor fields (``None``, flags) are kept from ``cond``; ``others`` must have the same fields. Guidance uses it
    to batch two conditionings, windowing to slice the time-aligned ones.
    """
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        names, get = list(cond), (lambda c, k: c[k])
    elif dataclasses.is_dataclass(cond):
        names, get = [f.name for f in dataclasses.fields(cond)], getattr
    else:
        raise TypeError(f"conditioning must be a mapping or a dataclass, not {type(cond).__name__}")
    out = {}
    for name in names:
        value = get(cond, name)
        out[name] = fn(name, value, *(get(o, name) for o in others)) if isinstance(value, torch.Tensor) else value
    return dict(out) if isinstance(cond, Mapping) else dataclasses.replace(cond, **out)


# ---------------------------------------------------------------------------------------------------------------------
# Discretisation


@dataclass(frozen=True)
class Steps:
    """Sampling times ``t`` ``[N + 1]`` (descending, ``t[-1] == 0``) and ``alpha_bar`` ``[N + 1]`` (``alpha_bar[-1] == 1``).

    Kept in float64 on the CPU: the per-step coefficients are scalars.
    """

    t: torch.Tensor
    alpha_bar: torch.Tensor

    def __post_init__(self):
        if self.t.shape != self.alpha_bar.shape or self.t.dim() != 1 or len(self.t) < 2:
            raise ValueError("steps need matching 1-D t and alpha_bar with at least two entries")
        if not bool(torch.all(self.t[1:] < self.t[:-1])):
            raise ValueError("step times must be strictly decreasing")
        if not (float(self.alpha_bar[0]) > 0 and float(self.alpha_bar[-1]) == 1.0):
            raise ValueError("alpha_bar must be > 0 at the first step and exactly 1 at the last (t = 0)")

    def __len__(self) -> int:
        return len(self.t) - 1


AlphaBar = Callable[[torch.Tensor], torch.Tensor]


def _uniform(u: torch.Tensor, alpha_bar: AlphaBar, t_max: float, t_min: float, power: float) -> torch.Tensor:
    return t_max * u


def _front_heavy(u: torch.Tensor, alpha_bar: AlphaBar, t_max: float, t_min: float, power: float) -> torch.Tensor:
    """Short steps at the start of sampling (high noise): ``t = t_max (1 - (1 - u)^power)``."""
    return t_max * (1.0 - (1.0 - u) ** power)


def _back_heavy(u: torch.Tensor, alpha_bar: AlphaBar, t_max: float, t_min: float, power: float) -> torch.Tensor:
    """Short steps at the end of sampling (low noise): ``t = t_max u^power``."""
    return t_max * u**power


def _log_snr(u: torch.Tensor, alpha_bar: AlphaBar, t_max: float, t_min: float, power: float) -> torch.Tensor:
    """Uniform in log-SNR ``lambda = log(alpha / sigma)`` from ``t_max`` to ``t_min``, then a last step to 0.

    The spacing DPM-Solver recommends (Lu et al. 2022, section 3.3); ``t`` is found by bisection of the (decreasing)
    log-SNR of ``alpha_bar``.
    """
    lam = lambda t: 0.5 * torch.log(alpha_bar(t) / (1.0 - alpha_bar(t)))  # noqa: E731
    ends = torch.tensor([t_max, t_min], dtype=torch.float64)
    lam_max, lam_min = lam(ends).tolist()
    frac = (u[:-1] - u[-2]) / (1.0 - u[-2])  # 1 at t_max, 0 at t_min
    target = lam_min + (lam_max - lam_min) * frac
    lo, hi = torch.zeros_like(target), torch.full_like(target, t_max)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = lam(mid) > target  # still too little noise: move right
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return torch.cat([0.5 * (lo + hi), u.new_zeros(1)])


# Spacing of sampling times: ``u = linspace(1, 0, n + 1)`` (u = 1 is the start) onto times. Noise2Music (appendix,
# "step schedules") hand-tunes where the ancestral sampler's steps go; front- and back-heavy are the two directions it
# names; ``log_snr`` suits the fast solver.
SPACINGS: dict[str, Callable[..., torch.Tensor]] = {
    "uniform": _uniform,
    "front_heavy": _front_heavy,
    "back_heavy": _back_heavy,
    "log_snr": _log_snr,
}


def make_steps(
    alpha_bar: AlphaBar,
    n: int,
    *,
    spacing: str = "uniform",
    power: float = 2.0,
    t_max: float = 1.0,
    t_min: float = 1e-3,
    t_stop: float = 0.0,
) -> Steps:
    """``n`` sampling steps from ``t_max`` down to 0 for a schedule ``alpha_bar(t)`` (t ``[K]`` float64 -> ``[K]``).

    ``power`` shapes the front/back-heavy spacings; ``t_min`` is where the log-SNR spacing stops before its last step.
    ``t_stop`` > 0: the first ``n - 1`` steps follow the spacing from ``t_max`` down to ``t_stop`` and the last one jumps
    to 0, so the result is the denoiser's ``x0`` estimate at ``t_stop`` (EDM's ``sigma_min``, Karras et al. 2022,
    table 1). A briefly trained model cannot tell the last, faint noise from the signal; its steps below ``t_stop``
    would keep that noise as texture.
    """
    if n < 1:
        raise ValueError("need at least one sampling step")
    if spacing not in SPACINGS:
        raise ValueError(f"unknown step spacing {spacing!r}; choose from {', '.join(SPACINGS)}")
    if spacing == "log_snr" and n < 2:
        raise ValueError("the log_snr spacing needs at least two steps")
    if t_stop and not 0.0 < t_stop < t_max:
        raise ValueError(f"t_stop must lie in (0, {t_max:g}), got {t_stop:g}")
    if t_stop and n < 2:
        raise ValueError("stopping at t_stop needs at least two sampling steps")
    if t_stop and spacing != "log_snr":  # the spacing's n - 1 steps from t_max to 0, pressed into [t_stop, t_max]
        inner = SPACINGS[spacing](torch.linspace(1.0, 0.0, n, dtype=torch.float64), alpha_bar, t_max, t_min, power)
        t = torch.cat([t_stop + (t_max - t_stop) * inner / t_max, inner.new_zeros(1)])
    else:  # log_snr: its grid already ends at t_min before the last step
        u = torch.linspace(1.0, 0.0, n + 1, dtype=torch.float64)
        t = SPACINGS[spacing](u, alpha_bar, t_max, t_stop or t_min, power).clone()
    t[0], t[-1] = t_max, 0.0
    ab = alpha_bar(t).to(torch.float64).clone()
    ab[-1] = 1.0
    if float(ab[0]) <= 0.0:
        raise ValueError(f"alpha_bar({t_max}) is 0: start sampling at a t_max where the signal is not fully destroyed")
    return Steps(t, ab)


# ---------------------------------------------------------------------------------------------------------------------
# Shared pieces


def predict(
    denoise: Denoiser, x: torch.Tensor, t: float, ab: float, cond: Cond, clip: Clip | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x0_hat, eps_hat)`` of the denoiser at time ``t``; with ``clip``, ``x0_hat`` is clipped and ``eps_hat``
    recomputed from it with ``alpha_bar = ab`` (the forward process), so the update stays consistent."""
    t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    pred = denoise(x, t_vec, cond)
    x0, eps = pred.x0.to(x.dtype), pred.eps.to(x.dtype)
    if clip is not None:
        x0 = clip(x0)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
    return x0, eps


def noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Standard normal noise shaped like ``x`` ``[B, ...]``; one generator per example makes each example's noise
    independent of what else is in the batch (a sample depends on its own seed only)."""
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype) for g in generator]).to(
        x.device
    )


def _report(callback: Callback | None, i: int, t: float, x: torch.Tensor, x0: torch.Tensor) -> None:
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "x0": x0})


def _pairs(steps: Steps):
    t, ab = steps.t.tolist(), steps.alpha_bar.tolist()
    return [(i, t[i], ab[i], t[i + 1], ab[i + 1]) for i in range(len(steps))]


# ---------------------------------------------------------------------------------------------------------------------
# Samplers


@torch.no_grad()
def sample_ancestral(
    denoise: Denoiser,
    x: torch.Tensor,
    steps: Steps,
    cond: Cond = None,
    *,
    gamma: float = 0.0,
    clip: Clip | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020) on the steps' sub-sequence, as Noise2Music samples (section 3.5).

    From ``s`` to the next time ``u`` (``ab_u > ab_s``), with ``beta = 1 - ab_s / ab_u``::

        mean = sqrt(ab_u) beta / (1 - ab_s) x0_hat + sqrt(ab_s / ab_u) (1 - ab_u) / (1 - ab_s) x_s
        var  = beta^gamma * beta_tilde^(1 - gamma),   beta_tilde = beta (1 - ab_u) / (1 - ab_s)

    ``gamma`` is the stochasticity parameter: 0 takes the posterior variance ``beta_tilde``, 1 the upper bound ``beta``,
    interpolating in log space (Nichol & Dhariwal 2021, eq. 15; Salimans & Ho 2022). No noise on the last step.
    """
    for i, t, ab_s, _, ab_u in _pairs(steps):
        x0, _ = predict(denoise, x, t, ab_s, cond, clip)
        beta = 1.0 - ab_s / ab_u
        mean = (math.sqrt(ab_u) * beta / (1.0 - ab_s)) * x0 + (math.sqrt(ab_s / ab_u) * (1.0 - ab_u) / (1.0 - ab_s)) * x
        x = mean
        if ab_u < 1.0:
            beta_tilde = beta * (1.0 - ab_u) / (1.0 - ab_s)
            std = math.exp(0.5 * (gamma * math.log(beta) + (1.0 - gamma) * math.log(beta_tilde)))
            x = mean + std * noise_like(x, generator)
        _report(callback, i, t, x, x0)
    return x


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    steps: Steps,
    cond: Cond = None,
    *,
    eta: float = 0.0,
    clip: Clip | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DDIM (Song, Meng & Ermon 2021, eq. 12): ``x_u = sqrt(ab_u) x0 + sqrt(1 - ab_u - sigma^2) eps + sigma z``.

    ``sigma = eta * sqrt((1 - ab_u) / (1 - ab_s)) * sqrt(1 - ab_s / ab_u)``: ``eta = 0`` is deterministic (the
    probability-flow ODE's first-order solver), ``eta = 1`` is ancestral sampling with the posterior variance.
    """
    for i, t, ab_s, _, ab_u in _pairs(steps):
        x0, eps = predict(denoise, x, t, ab_s, cond, clip)
        sigma = eta * math.sqrt((1.0 - ab_u) / (1.0 - ab_s) * (1.0 - ab_s / ab_u))
        x = math.sqrt(ab_u) * x0 + math.sqrt(max(1.0 - ab_u - sigma**2, 0.0)) * eps
        if sigma > 0.0:
            x = x + sigma * noise_like(x, generator)
        _report(callback, i, t, x, x0)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoise: Denoiser,
    x: torch.Tensor,
    steps: Steps,
    cond: Cond = None,
    *,
    clip: Clip | None = None,
    generator: Generators = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), the multistep second-order data-prediction solver (Lu et al. 2022, arXiv 2211.01095, Alg. 2).

    With ``alpha = sqrt(ab)``, ``sigma = sqrt(1 - ab)``, ``lambda = log(alpha / sigma)`` and ``h_i = lambda_i -
    lambda_{i-1}``::

        x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i
        D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},   r_i = h_{i-1} / h_i

    The first step and the last (to ``sigma = 0``) are first order (``D_i = x0_{i-1}``), as in k-diffusion.
    Deterministic: ``generator`` is accepted for the common signature and not used.
    """
    del generator
    old_x0, old_h = None, None
    for i, t, ab_s, _, ab_u in _pairs(steps):
        x0, _ = predict(denoise, x, t, ab_s, cond, clip)
        if ab_u >= 1.0:
            x = x0
        else:
            lam_s = 0.5 * math.log(ab_s / (1.0 - ab_s))
            lam_u = 0.5 * math.log(ab_u / (1.0 - ab_u))
            h = lam_u - lam_s
            d = x0
            if old_x0 is not None:
                r = old_h / h
                d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * old_x0
            x = math.sqrt((1.0 - ab_u) / (1.0 - ab_s)) * x - math.sqrt(ab_u) * math.expm1(-h) * d
            old_h = h
        old_x0 = x0
        _report(callback, i, t, x, x0)
    return x


# name -> (sampler, its default options). Noise2Music's ancestral sampler takes the stage's gamma.
SAMPLERS: dict[str, tuple[Callable[..., torch.Tensor], dict[str, float]]] = {
    "ancestral": (sample_ancestral, {"gamma": 0.0}),
    "ddim": (sample_ddim, {"eta": 0.0}),
    "dpmpp": (sample_dpmpp_2m, {}),
}


def get_sampler(name: str) -> tuple[Callable[..., torch.Tensor], dict[str, float]]:
    """The sampler function and its default options; ``ValueError`` naming the choices for an unknown name."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose from {', '.join(SAMPLERS)}") from None

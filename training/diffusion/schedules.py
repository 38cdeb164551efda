"""Variance-preserving noise schedules in continuous time ``t`` in [0, 1]: ``x_t = alpha_t x_0 + sigma_t eps``.

A schedule is a pure function ``t -> log-SNR`` (``lambda_t = log(alpha_t^2 / sigma_t^2)``), clamped to
``[-LOG_SNR_MAX, LOG_SNR_MAX]`` as Imagen / VDM do so that ``t = 0`` and ``t = 1`` stay finite; then
``alpha_t^2 = sigmoid(lambda_t)`` and ``sigma_t^2 = sigmoid(-lambda_t)`` (Kingma et al. 2021, VDM, eq. 3-4).

- ``linear``: DDPM's betas linear from 1e-4 to 0.02 over 1000 steps (Ho et al. 2020; Noise2Music's "sigma^2 from 0.0001
  to 0.02"), taken to continuous time as the VP SDE of Song et al. 2021 (eq. 33): ``beta(t) = b0 + t (b1 - b0)`` with
  ``b0 = 1000 * 1e-4``, ``b1 = 1000 * 0.02``, so ``alpha_bar(t) = exp(-(b0 t + (b1 - b0) t^2 / 2))``.
- ``cosine``: Nichol & Dhariwal 2021, eq. 17: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(pi/2 (t + s) / (1 + s))``.
"""

from __future__ import annotations

import math

import torch

LOG_SNR_MAX = 20.0


class Schedule:
    """Base class: subclasses give ``log_snr(t)``; everything else follows from it."""

    name = ""

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """``lambda_t`` for ``t`` of any shape, computed in float64; float64 in gives float64 out, else float32."""
        out_dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
        return self._log_snr(t.to(torch.float64)).clamp(-LOG_SNR_MAX, LOG_SNR_MAX).to(out_dtype)

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` with ``alpha_t^2 + sigma_t^2 = 1``, same shape as ``t``."""
        lam = self.log_snr(t)
        return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """``alpha_t^2`` (DDPM's cumulative product of ``1 - beta``)."""
        return torch.sigmoid(self.log_snr(t))


class LinearSchedule(Schedule):
    """DDPM's linear betas in continuous time (VP SDE). ``beta_start``/``beta_end`` per step of ``steps`` steps."""

    name = "linear"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, steps: int = 1000):
        self.b0 = beta_start * steps
        self.b1 = beta_end * steps

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        g = self.b0 * t + 0.5 * (self.b1 - self.b0) * t * t  # -log(alpha_bar)
        # alpha_bar / (1 - alpha_bar) = 1 / (e^g - 1); expm1 keeps precision near t = 0
        return -torch.log(torch.expm1(g).clamp(min=1e-300))


class CosineSchedule(Schedule):
    """Nichol & Dhariwal's cosine schedule with offset ``s``."""

    name = "cosine"

    def __init__(self, s: float = 0.008):
        self.s = s

    def _log_snr(self, t: torch.Tensor) -> torch.Tensor:
        f0 = math.cos(0.5 * math.pi * self.s / (1 + self.s)) ** 2
        ft = torch.cos(0.5 * math.pi * (t + self.s) / (1 + self.s)) ** 2
        alpha_bar = (ft / f0).clamp(0.0, 1.0)
        return torch.log(alpha_bar.clamp(min=1e-300)) - torch.log((1.0 - alpha_bar).clamp(min=1e-300))


SCHEDULES: dict[str, type[Schedule]] = {"linear": LinearSchedule, "cosine": CosineSchedule}


def get_schedule(name: str) -> Schedule:
    """A schedule by name (``linear`` | ``cosine``)."""
    if name not in SCHEDULES:
        raise KeyError(f"unknown schedule {name!r}; choose from {sorted(SCHEDULES)}")
    return SCHEDULES[name]()

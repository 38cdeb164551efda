"""Conditioning augmentation for cascaders (Ho et al. 2022, Cascaded Diffusion Models; Noise2Music section 3.1).

The low-fi conditioning ``z`` ``[B, C, T]`` is (1) blurred with a Gaussian kernel of ``BLUR_KERNEL`` taps and a standard
deviation drawn uniformly in ``blur_sigma`` (cascader: 0.1-5.0 samples) and (2) diffused to a time ``t_aug`` drawn
uniformly in ``[0, t_max]`` (0.5 cascader, 1.0 super-resolution): ``alpha z + sigma eps``. The network is told ``t_aug``;
at sampling time :meth:`ConditioningAugmentation.apply` adds a chosen fixed level instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from n2m.training.diffusion.schedules import Schedule

BLUR_KERNEL = 10  # taps (Noise2Music: "kernel size 10")


def gaussian_kernels(sigma: torch.Tensor, size: int = BLUR_KERNEL) -> torch.Tensor:
    """Normalised Gaussian kernels ``[B, size]`` for standard deviations ``sigma`` ``[B]`` (in samples).

    Taps at integer offsets ``n - size // 2`` (-5 ... 4 for 10 taps): centred on a sample, so the blur never shifts the
    signal and a small ``sigma`` is the identity (half-sample offsets would make every blur at least a 2-tap average).
    """
    offsets = torch.arange(size, dtype=torch.float32, device=sigma.device) - float(size // 2)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigma.float()[:, None]) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def blur(x: torch.Tensor, sigma: torch.Tensor, size: int = BLUR_KERNEL) -> torch.Tensor:
    """Blur each example of ``x`` ``[B, C, T]`` with its own Gaussian (``sigma`` ``[B]``); reflect padding, same length."""
    b, c, t = x.shape
    weight = gaussian_kernels(sigma, size).to(x.dtype).repeat_interleave(c, dim=0)[:, None, :]  # [B*C, 1, size]
    padded = F.pad(x.reshape(1, b * c, t), (size // 2, (size - 1) // 2), mode="reflect")
    return F.conv1d(padded, weight, groups=b * c).reshape(b, c, t)


class ConditioningAugmentation:
    """Random blur + diffusion noise on a cascader's low-fi input, with the schedule of the stage being trained.

    ``blur_fn`` is the blur applied before the noise; subclasses swap it (the vocoder's 2D spectrogram blur).
    """

    blur_fn = staticmethod(blur)

    def __init__(self, schedule: Schedule, t_max: float, blur_sigma: tuple[float, float] | None = None):
        self.schedule = schedule
        self.t_max = float(t_max)
        self.blur_sigma = blur_sigma

    def apply(self, z: torch.Tensor, t: torch.Tensor, sigma_blur: torch.Tensor | None = None,
              noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Deterministic part: optional blur by ``sigma_blur`` ``[B]``, then diffuse ``z`` ``[B, C, T]`` to ``t`` ``[B]``."""
        if sigma_blur is not None:
            z = self.blur_fn(z, sigma_blur)
        if noise is None:
            device = generator.device if generator is not None else z.device
            noise = torch.randn(z.shape, generator=generator, device=device).to(z.device, z.dtype)
        alpha, sigma = self.schedule.alpha_sigma(t)
        return alpha.to(z.dtype)[:, None, None] * z + sigma.to(z.dtype)[:, None, None] * noise

    def __call__(self, z: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment ``z`` ``[B, C, T]`` at random levels. Returns ``(z_aug [B, C, T], t_aug [B])``."""
        b = z.shape[0]
        device = generator.device if generator is not None else z.device
        t = (torch.rand(b, generator=generator, device=device) * self.t_max).to(z.device)
        sigma_blur = None
        if self.blur_sigma is not None:
            lo, hi = self.blur_sigma
            sigma_blur = (lo + (hi - lo) * torch.rand(b, generator=generator, device=device)).to(z.device)
        return self.apply(z, t, sigma_blur, generator=generator), t

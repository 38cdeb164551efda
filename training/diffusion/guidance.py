"""Classifier-free guidance and Imagen's dynamic clipping: transforms around a denoiser and its x0 prediction.

- :func:`classifier_free` wraps ``denoise(x, t, cond) -> prediction`` into the guided denoiser
  ``eps = eps_u + w (eps_c - eps_u)`` (Ho & Salimans 2022, eq. 6), evaluating the conditional and the unconditional
  halves in one batch. Noise2Music (section 3.5) guides with ``w = 10`` (generator) and ``w = 5`` (cascader).
  A prediction is a :class:`n2m.training.diffusion.denoiser.Prediction` (``eps`` and ``x0``, combined alike, which keeps
  them consistent: the weights of every combination here sum to 1) or any tensor.
- :func:`double_classifier_free` guides a denoiser conditioned on text and audio at once with two scales,
  MusicGen-Style's double classifier-free guidance (Rouard et al. 2024, "Audio Conditioning for Music Generation via
  Discrete Bottleneck Features", section 4.3; audiocraft's ``cfg_coef`` = alpha and ``cfg_coef_beta`` = beta).
- :func:`dynamic_clip` is Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3): per sample,
  ``s = max(1, quantile_p(|x0|))``, then ``x0 <- clip(x0, -s, s) / s``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from n2m.training.diffusion.samplers import Clip, Cond, Denoiser, map_cond


def concat_cond(first: Cond, second: Cond) -> Cond:
    """Join two conditionings of the same structure along the batch (tensor fields concatenated on dim 0)."""
    if (first is None) != (second is None):
        raise ValueError("cannot batch a conditioning with None")
    return map_cond(lambda name, a, b: torch.cat([a, b], dim=0), first, second)


def classifier_free(denoise: Denoiser, scale: float, uncond: Cond) -> Denoiser:
    """The guided denoiser ``eps_u + scale * (eps_c - eps_u)``; ``uncond`` is the unconditional ``cond`` (same batch).

    ``scale == 1`` returns ``denoise`` itself (the conditional model, one forward pass); ``scale == 0`` the
    unconditional model. Otherwise both halves run as one batch ``[2B, C, T]``.
    """
    if scale == 1.0:
        return denoise
    if scale == 0.0:
        return lambda x, t, cond: denoise(x, t, uncond)

    def guided(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        both = denoise(torch.cat([x, x]), torch.cat([t, t]), concat_cond(cond, uncond))
        eps_c, eps_u = both.chunk(2, dim=0)
        return eps_u + scale * (eps_c - eps_u)

    return guided


def double_classifier_free(denoise: Denoiser, text_scale: float, audio_scale: float, audio_only: Cond,
                           uncond: Cond) -> Denoiser:
    """Double classifier-free guidance for a text + audio conditioned denoiser (Rouard et al. 2024, section 4.3)::

        eps = eps_0 + alpha * (eps_a + beta * (eps_ta - eps_a) - eps_0)
            = eps_0 + alpha * (eps_a - eps_0) + alpha * beta * (eps_ta - eps_a)

    with ``alpha = audio_scale`` (audiocraft's ``cfg_coef``), ``beta = text_scale`` (``cfg_coef_beta``), ``eps_ta`` the
    denoiser under the full ``cond`` (text and audio), ``eps_a`` under ``audio_only`` (the same batch with its text
    dropped) and ``eps_0`` under ``uncond`` (both dropped). The three run as one batch ``[3B, C, T]``. The model must
    have been trained with the two conditions dropped independently (:func:`n2m.training.diffusion.denoiser.
    cfg_dropout_pair`), so that it knows ``eps_a`` and ``eps_0``.

    The scales reduce to single guidance: ``beta = 1`` is :func:`classifier_free` on the joint condition at scale
    ``alpha``; ``beta = 0`` is classifier-free guidance by audio alone (text ignored); ``alpha = 1`` is
    classifier-free guidance of text at scale ``beta`` over the audio-only model; ``alpha = 0`` is the unconditional
    model. Those cases run the two (or one) conditionings they need.
    """
    if audio_scale == 0.0:
        return lambda x, t, cond: denoise(x, t, uncond)
    if text_scale == 1.0:
        return classifier_free(denoise, audio_scale, uncond)
    if text_scale == 0.0:
        by_audio = classifier_free(denoise, audio_scale, uncond)
        return lambda x, t, cond: by_audio(x, t, audio_only)
    if audio_scale == 1.0:
        return classifier_free(denoise, text_scale, audio_only)

    def guided(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        three = denoise(torch.cat([x, x, x]), torch.cat([t, t, t]),
                        concat_cond(concat_cond(cond, audio_only), uncond))
        eps_ta, eps_a, eps_0 = three.chunk(3, dim=0)
        return eps_0 + audio_scale * (eps_a + text_scale * (eps_ta - eps_a) - eps_0)

    return guided


def dynamic_clip(percentile: float = 0.995) -> Clip:
    """Imagen's dynamic thresholding of ``x0`` ``[B, ...]``: each sample is clipped to ``[-s, s]`` and divided by ``s``.

    ``s`` is the ``percentile`` quantile of ``|x0|`` over the sample, floored at 1, so samples inside [-1, 1] pass
    unchanged and the output always lies in [-1, 1].
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError("dynamic clipping percentile must be in (0, 1]")

    def clip(x0: torch.Tensor) -> torch.Tensor:
        flat = x0.detach().abs().reshape(x0.shape[0], -1).float()
        s = _quantile(flat, percentile)
        s = s.clamp_min(1.0).to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        return torch.maximum(torch.minimum(x0, s), -s) / s

    return clip


def _quantile(flat: torch.Tensor, percentile: float) -> torch.Tensor:
    """Row quantiles of ``[B, N]`` with linear interpolation, by ``kthvalue`` (``torch.quantile`` refuses > 16M inputs)."""
    n = flat.shape[1]
    pos = percentile * (n - 1)
    lo, frac = int(pos), pos - int(pos)
    low = flat.kthvalue(lo + 1, dim=1).values
    if frac == 0.0:
        return low
    high = flat.kthvalue(min(lo + 2, n), dim=1).values
    return low + frac * (high - low)


def static_clip(x0: torch.Tensor) -> torch.Tensor:
    """Static thresholding: ``clip(x0, -1, 1)`` (Ho et al. 2020)."""
    return x0.clamp(-1.0, 1.0)


# name -> factory(percentile) of the x0 transform used while sampling.
CLIPS: Mapping[str, Callable[[float], Clip | None]] = {
    "dynamic": dynamic_clip,
    "static": lambda percentile: static_clip,
    "none": lambda percentile: None,
}


def make_clip(name: str, percentile: float = 0.995, scale: float = 1.0) -> Clip | None:
    """The x0 transform called ``name`` (``dynamic``, ``static`` or ``none``). ``scale``: the denoiser's data scale;
    the transform then acts on ``x0 / scale`` (the signal in data units, where [-1, 1] is the valid range) and
    returns to the diffusion space."""
    if name not in CLIPS:
        raise ValueError(f"unknown clipping {name!r}; choose from {', '.join(CLIPS)}")
    clip = CLIPS[name](percentile)
    if clip is None or scale == 1.0:
        return clip
    return lambda x0: clip(x0 / scale) * scale

"""Run a denoiser over a long signal in overlapping windows, cross-faded at every sampling step.

Noise2Music's cascaders and vocoder train on 3-4 s snippets and have no self-attention, so a 30 s output can be
denoised whole or piecewise. Piecewise, each sampling step evaluates the denoiser on overlapping windows of ``x_t``
(and of the time-aligned conditioning: the upsampled low-fi signal, the spectrogram) and blends the predictions with
raised-cosine weights that sum to one everywhere. Blending the *predictions of every step* rather than finished
windows keeps all windows on one shared trajectory, so there is no seam to hide at the end (the MultiDiffusion
scheme, Bar-Tal et al. 2023, arXiv 2302.08113, eq. 5, with a cross-fade instead of a box average).

:func:`windowed` builds the windowed denoiser; :func:`whole_or_windowed` tries the whole signal first and falls back
to windows when the accelerator runs out of memory ("whole when memory allows").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from fractions import Fraction

import torch

from n2m.training.diffusion.denoiser import Prediction
from n2m.training.diffusion.samplers import Cond, Denoiser, map_cond

log = logging.getLogger(__name__)


def window_starts(length: int, window: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of windows of ``window`` samples covering ``[0, length)`` with at least ``overlap`` shared.

    Starts are multiples of ``multiple``; the last window ends at ``length`` (which must be a multiple too).
    """
    if window <= overlap:
        raise ValueError(f"window ({window}) must be longer than the overlap ({overlap})")
    if window % multiple or length % multiple:
        raise ValueError(f"window {window} and length {length} must be multiples of {multiple}")
    if length <= window:
        return [0]
    hop = max(multiple, (window - overlap) // multiple * multiple)
    starts = list(range(0, length - window, hop))
    starts.append(length - window)
    return starts


def crossfade_weights(length: int, window: int, starts: Sequence[int], ramp: int) -> torch.Tensor:
    """Per-window weights ``[N, window]``: raised-cosine ramps of ``ramp`` samples on inner edges, 1 elsewhere.

    ``w(n) = sin^2(pi/2 * (n + 0.5) / ramp)`` rises from near 0 to near 1; outer edges of the signal keep weight 1.
    Normalised so that the weights of all windows sum to 1 at every sample.
    """
    ramp = max(1, min(ramp, window // 2))
    rise = torch.sin(0.5 * math.pi * (torch.arange(ramp, dtype=torch.float64) + 0.5) / ramp) ** 2
    weights = torch.ones(len(starts), window, dtype=torch.float64)
    for i, start in enumerate(starts):
        if start > 0:
            weights[i, :ramp] = rise
        if start + window < length:
            weights[i, -ramp:] = rise.flip(0)
    total = torch.zeros(length, dtype=torch.float64)
    for i, start in enumerate(starts):
        total[start : start + window] += weights[i]
    for i, start in enumerate(starts):
        weights[i] /= total[start : start + window]
    return weights


def _slice(name: str, value: torch.Tensor, ratio: Fraction, start: int, window: int) -> torch.Tensor:
    lo, hi = start * ratio, (start + window) * ratio
    if lo.denominator != 1 or hi.denominator != 1:
        raise ValueError(f"conditioning {name!r} cannot be cut at sample {start}: rate ratio {ratio}")
    return value[..., int(lo) : int(hi)]


def windowed(
    denoise: Denoiser,
    *,
    window: int,
    overlap: int,
    aligned: Sequence[str] = (),
    multiple: int = 1,
    windows_per_call: int = 1,
) -> Denoiser:
    """The denoiser applied to windows of ``window`` samples overlapping by ``overlap`` and cross-faded.

    ``aligned`` names the conditioning fields that run along time (``[B, C, T_k]``, with ``T_k / T`` a fixed ratio,
    e.g. ``lowfi`` at 1 or a spectrogram at 1/160): they are cut with the window. Other fields (text, levels) are
    repeated for each window. Window starts are multiples of ``multiple``, the aligned conditioning's frame size (160
    for a spectrogram), so every cut is exact; ``window`` must be a multiple of it and of the network's total stride.
    ``windows_per_call`` windows go through the network as one batch ``[n * B, C, window]``. Both fields of the
    prediction (``eps`` and ``x0``) are cross-faded with the same weights. The overlap is at most half the window (a
    window no longer than the overlap would otherwise advance one ``multiple`` at a time: thousands of windows).
    """
    overlap = min(overlap, window // 2 // multiple * multiple)
    ramp = overlap

    def run(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> Prediction:
        length = x.shape[-1]
        if length <= window:
            return denoise(x, t, cond)
        starts = window_starts(length, window, overlap, multiple)
        weights = crossfade_weights(length, window, starts, ramp).to(x.device, x.dtype)
        out = Prediction(torch.zeros_like(x), torch.zeros_like(x))
        for first in range(0, len(starts), windows_per_call):
            chunk = starts[first : first + windows_per_call]
            n = len(chunk)

            def cut(name: str, value: torch.Tensor, chunk=chunk, n=n) -> torch.Tensor:
                if name in aligned:
                    ratio = Fraction(value.shape[-1], length)
                    return torch.cat([_slice(name, value, ratio, s, window) for s in chunk], dim=0)
                return value.repeat(n, *([1] * (value.dim() - 1)))

            xs = torch.cat([x[..., s : s + window] for s in chunk], dim=0)  # [n * B, C, window]
            pred = denoise(xs, t.repeat(n), map_cond(cut, cond))
            for total, part in ((out.eps, pred.eps), (out.x0, pred.x0)):
                part = part.view(n, *x.shape[:-1], window)
                for k, start in enumerate(chunk):
                    total[..., start : start + window] += part[k] * weights[first + k]
        return out

    return run


def whole_or_windowed(whole: Denoiser, pieces: Denoiser) -> Denoiser:
    """Use ``whole`` until the accelerator runs out of memory once, then ``pieces`` for the rest of the run."""
    state = {"windowed": False}

    def run(x: torch.Tensor, t: torch.Tensor, cond: Cond) -> Prediction:
        if not state["windowed"]:
            try:
                return whole(x, t, cond)
            except torch.OutOfMemoryError:
                log.warning("out of memory on the whole signal (%d samples): switching to windows", x.shape[-1])
                state["windowed"] = True
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
        return pieces(x, t, cond)

    return run

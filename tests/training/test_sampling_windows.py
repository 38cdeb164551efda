"""Windowed denoising: partition of unity, exact cuts of aligned conditioning, and no seams on a smooth signal."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from n2m.training.diffusion.denoiser import Prediction
from n2m.training.diffusion.samplers import make_steps, sample_ddim
from n2m.training.windowing import crossfade_weights, whole_or_windowed, window_starts, windowed


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    return torch.exp(-(0.1 * t + 0.5 * 19.9 * t**2))


def test_windows_cover_and_weights_sum_to_one():
    starts = window_starts(10_000, 3000, 500, multiple=100)
    assert starts[0] == 0 and starts[-1] == 7000 and all(s % 100 == 0 for s in starts)
    assert all(b - a <= 2500 for a, b in zip(starts, starts[1:]))
    weights = crossfade_weights(10_000, 3000, starts, ramp=500)
    total = np.zeros(10_000)
    for w, s in zip(weights.numpy(), starts):
        total[s : s + 3000] += w
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    assert window_starts(2000, 3000, 500) == [0]
    with pytest.raises(ValueError):
        window_starts(10_000, 3000, 3000)


def _smoother(width: int = 33):
    """x0_hat = zero-padded moving average of the low-fi input: exact inside, sagging at every window edge."""
    kernel = torch.ones(1, 1, width, dtype=torch.float64) / width

    def denoise(x, t, cond):
        x0 = F.conv1d(cond["lowfi"], kernel, padding=width // 2)
        ab = alpha_bar(t.double()).view(-1, 1, 1)
        return Prediction(eps=(x - ab.sqrt() * x0) / (1 - ab).sqrt(), x0=x0)

    return denoise


def _sample(denoise, length: int) -> torch.Tensor:
    t = torch.arange(length, dtype=torch.float64) / 16_000
    lowfi = (0.8 * torch.sin(2 * math.pi * 97 * t + 0.3))[None, None]
    x_t = torch.randn(1, 1, length, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return sample_ddim(denoise, x_t, make_steps(alpha_bar, 4), {"lowfi": lowfi})[0, 0]


def test_no_discontinuity_spikes_at_window_boundaries():
    length = 16_000 * 2
    whole = _sample(_smoother(), length)
    pieces = _sample(windowed(_smoother(), window=8000, overlap=1600, aligned=("lowfi",), windows_per_call=2), length)
    inner = slice(100, length - 100)  # the global ends sag in both versions alike
    step_whole = whole.diff()[inner].abs().max()
    assert float(pieces.diff()[inner].abs().max()) <= 1.02 * float(step_whole)
    assert float((pieces - whole).abs().max()) < 5e-3

    hard = _sample(windowed(_smoother(), window=8000, overlap=0, aligned=("lowfi",)), length)
    assert float(hard.diff()[inner].abs().max()) > 2 * float(step_whole)  # the check can see a seam


def test_aligned_conditioning_at_frame_rate_is_cut_exactly():
    hop = 160
    frames = torch.randn(2, 3, 200, generator=torch.Generator().manual_seed(1))
    calls = []

    def upsample_cond(x, t, cond):
        assert cond["aligned"].shape[-1] * hop == x.shape[-1]
        assert cond["text"].shape[0] == x.shape[0]
        calls.append(x.shape[0])
        up = cond["aligned"].repeat_interleave(hop, dim=-1)
        return Prediction(eps=up, x0=1.0 - up)

    fn = windowed(upsample_cond, window=40 * hop, overlap=8 * hop, aligned=("aligned",), multiple=hop, windows_per_call=3)
    x = torch.zeros(2, 3, 200 * hop)
    out = fn(x, torch.zeros(2), {"aligned": frames, "text": torch.ones(2, 4)})
    torch.testing.assert_close(out.eps, frames.repeat_interleave(hop, dim=-1))
    torch.testing.assert_close(out.x0, 1.0 - frames.repeat_interleave(hop, dim=-1))  # both fields, the same weights
    assert calls[0] == 6  # three windows of a batch of two in one call


def test_whole_or_windowed_falls_back_after_out_of_memory():
    calls = []

    def whole(x, t, cond):
        calls.append("whole")
        raise torch.OutOfMemoryError("CUDA out of memory")

    def pieces(x, t, cond):
        calls.append("pieces")
        return x

    fn = whole_or_windowed(whole, pieces)
    fn(torch.zeros(1), torch.zeros(1), None)
    fn(torch.zeros(1), torch.zeros(1), None)
    assert calls == ["whole", "pieces", "pieces"]


def test_an_overlap_as_long_as_the_window_is_cut_to_half_of_it():
    """--window-seconds at or below the 0.5 s overlap: the windows advance half a window, not one frame."""
    calls = []

    def denoise(x, t, cond):
        calls.append(x.shape[-1])
        return Prediction(torch.zeros_like(x), torch.zeros_like(x))

    length, window, multiple = 48_000, 4_000, 100
    run = windowed(denoise, window=window, overlap=12_000, multiple=multiple)
    out = run(torch.zeros(1, 1, length), torch.full((1,), 0.5), {})
    assert out.x0.shape == (1, 1, length) and set(calls) == {window}
    assert len(calls) == len(window_starts(length, window, window // 2, multiple)) == 23  # (48000 - 4000) / 2000 + 1


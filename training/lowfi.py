"""Low-fidelity conditioning for cascaders: downsample, then upsample back by FFT zero-padding (Noise2Music 3.1).

Training makes it from the clip itself (:func:`make_lowfi`, numpy in data-loader workers); sampling upsamples the
previous stage's output (a torch tensor, possibly on a GPU) with the same :func:`fft_upsample`, so the cascader sees
the same kind of input in both. :func:`keep_input_band` (``n2m sample --keep-input-band``) puts the input's own band
back into a cascader's output, leaving the cascader only the band its input lacks.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import torch

KEEP_BAND = (0.85, 0.95)  # keep_input_band's crossfade, as fractions of the input's Nyquist frequency


def fft_upsample(x: torch.Tensor | np.ndarray, n_out: int) -> torch.Tensor | np.ndarray:
    """Band-limited upsampling of ``x`` ``[..., T]`` to ``[..., n_out]`` by zero-padding its spectrum.

    Equal to ``scipy.signal.resample`` (the Nyquist bin of an even-length input is split in two halves). numpy in ->
    numpy out (scipy.fft, fast on CPU for any length); torch in -> torch out on the same device.
    """
    n_in = x.shape[-1]
    if n_out < n_in:
        raise ValueError(f"fft_upsample makes signals longer: {n_in} -> {n_out}")
    if isinstance(x, np.ndarray):
        spectrum = scipy.fft.rfft(x.astype(np.float32, copy=False), axis=-1)
        padded = np.zeros((*spectrum.shape[:-1], n_out // 2 + 1), dtype=spectrum.dtype)
    else:
        spectrum = torch.fft.rfft(x.float(), dim=-1)
        padded = torch.zeros(*spectrum.shape[:-1], n_out // 2 + 1, dtype=spectrum.dtype, device=spectrum.device)
    padded[..., : spectrum.shape[-1]] = spectrum
    if n_in % 2 == 0 and n_out > n_in:
        padded[..., n_in // 2] *= 0.5  # the Nyquist bin is shared by +/- f_N; scipy keeps one half at each
    if isinstance(x, np.ndarray):
        return (scipy.fft.irfft(padded, n=n_out, axis=-1) * (n_out / n_in)).astype(np.float32)
    return torch.fft.irfft(padded, n=n_out, dim=-1) * (n_out / n_in)


def make_lowfi(x: np.ndarray, sample_rate: int, low_rate: int) -> np.ndarray:
    """The cascader's conditioning from its target ``x`` ``[C, T]`` at ``sample_rate``: soxr down to ``low_rate``, then
    FFT back up to ``T`` samples. Returns float32 ``[C, T]``."""
    from n2m.audio import resample

    return fft_upsample(resample(x, sample_rate, low_rate), x.shape[-1])


def keep_input_band(out: torch.Tensor, prev: torch.Tensor, band: tuple[float, float] = KEEP_BAND) -> torch.Tensor:
    """A cascader's output ``out`` ``[B, C, T]`` whose spectrum below ``band[0]`` x its input's Nyquist frequency is
    its input's, ``prev`` ``[B, C, T_in]`` upsampled by :func:`fft_upsample` (as the cascader saw it), and above
    ``band[1]`` x its own, with a raised-cosine crossfade between (the complementary weights sum to 1 at every bin).
    The cascader is trained to add the band its input lacks; what it makes of the band it was given is kept out, as
    AudioSR's post-processing replaces the low frequencies of its output with its input's (Liu et al. 2023, arXiv
    2309.07314). ``prev`` at the input rate r_in spans ``T_in = T * r_in / r`` samples, so its Nyquist falls on bin
    ``T_in / 2`` of ``out``'s spectrum."""
    start, stop = band
    if not 0 < start < stop <= 1:
        raise ValueError(f"keep_input_band: the crossfade needs 0 < start < stop <= 1, got {band}")
    n = out.shape[-1]
    low = fft_upsample(prev.float(), n)
    position = torch.arange(n // 2 + 1, device=out.device, dtype=torch.float32) / (prev.shape[-1] / 2)
    fade = ((stop - position) / (stop - start)).clamp(0.0, 1.0)  # 1 below start, 0 above stop
    weight = 0.5 - 0.5 * torch.cos(math.pi * fade)
    mixed = weight * torch.fft.rfft(low, dim=-1) + (1 - weight) * torch.fft.rfft(out.float(), dim=-1)
    return torch.fft.irfft(mixed, n=n, dim=-1).to(out.dtype)

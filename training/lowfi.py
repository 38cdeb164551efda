"""Low-fidelity conditioning for cascaders: downsample, then upsample back by FFT zero-padding (Noise2Music 3.1).

Training makes it from the clip itself (:func:`make_lowfi`, numpy in data-loader workers); sampling upsamples the
previous stage's output (a torch tensor, possibly on a GPU) with the same :func:`fft_upsample`, so the cascader sees
the same kind of input in both.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import torch


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

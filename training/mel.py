"""The log-mel frontend of the spectrogram path (Noise2Music §3.2: 80 mel channels, 100 frames/s, values in [-1, 1]).

Targets of the ``spec_generator`` stage and the conditioning input of the ``vocoder`` stage are computed on the fly from
16 kHz waveforms with :class:`MelFrontend`, so one definition serves training, sampling and tests. The parameters:

======================  ========================================================================================
sample rate             16 000 Hz
STFT                    ``n_fft`` 1024, Hann window of 640 samples (40 ms, periodic, centred in the frame),
                        hop 160 samples (10 ms -> 100 frames/s), frames centred on ``t * hop`` with zero padding
mel filterbank          80 bands, 0-8000 Hz, Slaney mel scale and Slaney area normalisation (librosa's default)
power                   ``|STFT|^2`` summed through the filterbank, floored at ``10^(DB_MIN/10)``
log                     ``10 log10(power)`` in dB, clipped to ``[DB_MIN, DB_MAX] = [-80, +40]`` dB
scaling                 linear map of ``[DB_MIN, DB_MAX]`` to ``[-1, 1]``
frames                  ``T // hop`` frames for ``T`` samples (frame ``f`` covers samples around ``f * hop``), so a
                        30 s clip gives exactly 3000 frames and ``frames * hop == samples`` aligns with the vocoder
======================  ========================================================================================

A full-scale sine peaks near +30 dB, full-scale noise near +12 dB; +40 dB leaves headroom and -80 dB is below what
16-bit audio resolves in a mel band. The same values come out of ``librosa.feature.melspectrogram(y, sr=16000,
n_fft=1024, hop_length=160, win_length=640, n_mels=80, fmin=0, fmax=8000, pad_mode="constant")`` (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 1024
WIN_LENGTH = 640
HOP = 160
N_MELS = 80
F_MIN = 0.0
F_MAX = 8000.0
DB_MIN = -80.0
DB_MAX = 40.0


@dataclass(frozen=True)
class MelConfig:
    """The frontend's parameters (recorded in stage configs and sample sidecars)."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = N_FFT
    win_length: int = WIN_LENGTH
    hop: int = HOP
    n_mels: int = N_MELS
    f_min: float = F_MIN
    f_max: float = F_MAX
    db_min: float = DB_MIN
    db_max: float = DB_MAX

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Slaney mel scale (Slaney 1998, Auditory Toolbox): linear below 1 kHz, logarithmic above


_F_SP = 200.0 / 3  # Hz per mel in the linear part
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney mel of frequencies in Hz (array in, array out)."""
    freq = np.asarray(freq, dtype=np.float64)
    mel = freq / _F_SP
    log_part = freq >= _MIN_LOG_HZ
    mel = np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(freq, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP, mel)
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


def mel_filterbank(cfg: MelConfig = MelConfig()) -> np.ndarray:
    """Triangular filters ``[n_mels, n_fft // 2 + 1]``, each scaled to unit area over Hz (Slaney normalisation)."""
    fft_freqs = np.linspace(0.0, cfg.sample_rate / 2, cfg.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))  # [n_mels + 2]
    widths = np.diff(edges)  # [n_mels + 1]
    offsets = edges[:, None] - fft_freqs[None, :]  # [n_mels + 2, F]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, F]
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# The frontend


class MelFrontend(torch.nn.Module):
    """Waveform ``[B, T]`` (or ``[B, 1, T]``) at 16 kHz -> scaled log-mel ``[B, n_mels, T // hop]`` in [-1, 1].

    A module (buffers follow ``.to(device)``) so training can run it on the accelerator on each batch.
    """

    def __init__(self, cfg: MelConfig = MelConfig()):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.win_length, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank(cfg)), persistent=False)

    def power(self, audio: torch.Tensor) -> torch.Tensor:
        """Mel power ``[B, n_mels, T // hop]`` (float32) of audio ``[B, T]`` or ``[B, 1, T]``."""
        cfg = self.cfg
        if audio.dim() == 3:
            audio = audio[:, 0]
        frames = audio.shape[-1] // cfg.hop
        spec = torch.stft(
            audio.float(),
            n_fft=cfg.n_fft,
            hop_length=cfg.hop,
            win_length=cfg.win_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # [B, F, T // hop + 1]
        power = spec.real.square() + spec.imag.square()
        return torch.matmul(self.filters, power[..., :frames])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return db_to_unit(10.0 * torch.log10(self.power(audio).clamp_min(10.0 ** (self.cfg.db_min / 10))), self.cfg)


def db_to_unit(db: torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Map dB in ``[db_min, db_max]`` linearly to ``[-1, 1]`` (clipping outside)."""
    return (2.0 * (db - cfg.db_min) / (cfg.db_max - cfg.db_min) - 1.0).clamp(-1.0, 1.0)


def unit_to_db(unit: torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """Inverse of :func:`db_to_unit` (for plots and listening checks of generated spectrograms)."""
    return cfg.db_min + (unit.clamp(-1.0, 1.0) + 1.0) * 0.5 * (cfg.db_max - cfg.db_min)


def frames_for(samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Number of mel frames for ``samples`` waveform samples."""
    return samples // cfg.hop

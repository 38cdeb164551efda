"""A vocoder with nothing to train: Griffin-Lim inversion of the spectrogram path's log-mel (:mod:`n2m.training.mel`).

``n2m sample --cascade spectrogram --checkpoints spec_generator=A,vocoder=griffin-lim,sr_cascader=C`` puts it in the
vocoder's slot: a spectrogram generator can then be heard (and judged) before a diffusion vocoder has been trained,
which takes far more than CPU minutes (the ``small`` vocoder after 600 steps still turns real log-mels into noise).
It is a baseline, not Noise2Music's vocoder: the phase it finds is consistent but not the original's, so attacks smear.

From the log-mel ``[B, 80, F]`` (values in [-1, 1]) to 16 kHz audio ``[B, 1, F * hop]``:

1. undo the scaling (:func:`n2m.training.mel.unit_to_db`) and the log: mel power ``[B, 80, F]``;
2. the non-negative linear power spectrum ``P`` ``[B, 513, F]`` whose mel projection is closest to it, by the
   multiplicative updates of non-negative least squares (Lee & Seung 2001, "Algorithms for non-negative matrix
   factorization", eq. 4, with the filterbank fixed): ``P <- P * (M^T m) / (M^T M P)``, :data:`NNLS_ITERATIONS`
   times from ``M^T m``;
3. magnitude ``sqrt(P)``, phase by the fast Griffin-Lim algorithm (Perraudin, Balazs & Sondergaard 2013, "A fast
   Griffin-Lim algorithm", algorithm 2: Griffin & Lim 1984's projections with momentum :data:`MOMENTUM`), the STFT of
   :class:`n2m.training.mel.MelFrontend` (n_fft 1024, Hann window of 640, hop 160, centred frames), starting from a
   seeded random phase.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from n2m.training.mel import MelConfig, mel_filterbank, unit_to_db

NAME = "griffin-lim"
ITERATIONS = 64
MOMENTUM = 0.99  # Perraudin et al. 2013 recommend alpha = 0.99
NNLS_ITERATIONS = 50
_TINY = 1e-12


@dataclass(frozen=True)
class InversionConfig:
    """What the cascade checks and the sampler reads of a stage's network config: a vocoder that takes the 80 mel
    channels and makes one channel of audio, conditioned on nothing else."""

    out_channels: int = 1
    aligned_channels: int = MelConfig().n_mels
    lowfi_channels: int = 0
    text_dim: int = 0
    joint_dim: int = 0
    melody_channels: int = 0


class GriffinLim(nn.Module):
    """``forward(mel [B, 80, F], seed)`` -> audio ``[B, 1, F * hop]`` at the mel's sample rate (see the module)."""

    def __init__(self, iterations: int = ITERATIONS, momentum: float = MOMENTUM, mel: MelConfig = MelConfig()):
        super().__init__()
        if iterations < 1 or not 0.0 <= momentum < 1.0:
            raise ValueError("Griffin-Lim needs iterations >= 1 and momentum in [0, 1)")
        self.iterations, self.momentum, self.mel = iterations, momentum, mel
        self.cfg = InversionConfig(aligned_channels=mel.n_mels)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank(mel)).float(), persistent=False)  # [80, 513]
        self.register_buffer("window", torch.hann_window(mel.win_length, periodic=True), persistent=False)

    def config(self) -> dict[str, Any]:
        """The stage config a sample sidecar records for this vocoder."""
        return {"stage": "vocoder", "kind": NAME, "spec": {"sample_rate": self.mel.sample_rate,
                                                           "cond_rate": int(self.mel.frames_per_second)},
                "griffin_lim": {"iterations": self.iterations, "momentum": self.momentum,
                                "nnls_iterations": NNLS_ITERATIONS}, "mel": asdict(self.mel)}

    def linear_power(self, mel: torch.Tensor) -> torch.Tensor:
        """Scaled log-mel ``[B, 80, F]`` -> non-negative linear power ``[B, 513, F]`` (steps 1-2 of the module)."""
        target = 10.0 ** (unit_to_db(mel.float(), self.mel) / 10.0)  # [B, 80, F]
        basis = self.filters  # [80, 513]
        numerator = basis.T @ target  # [B, 513, F]
        power = numerator.clone()
        for _ in range(NNLS_ITERATIONS):  # M^T (M P) rather than (M^T M) P: two thin products instead of a square one
            power = power * numerator / (basis.T @ (basis @ power)).clamp_min(_TINY)
        return power

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        return torch.stft(audio, n_fft=self.mel.n_fft, hop_length=self.mel.hop, win_length=self.mel.win_length,
                          window=self.window, center=True, pad_mode="constant", return_complex=True)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(spec, n_fft=self.mel.n_fft, hop_length=self.mel.hop, win_length=self.mel.win_length,
                           window=self.window, center=True, length=length)

    @torch.no_grad()
    def forward(self, mel: torch.Tensor, seed: int = 0) -> torch.Tensor:
        frames = mel.shape[-1]
        length = frames * self.mel.hop
        power = self.linear_power(mel)
        # the centred STFT of `length` samples has one frame more than the mel keeps: repeat the last
        magnitude = torch.cat([power, power[..., -1:]], dim=-1).sqrt()  # [B, 513, F + 1]
        phase = torch.rand(magnitude.shape, generator=torch.Generator().manual_seed(seed)).to(mel.device)
        spec = magnitude * torch.exp(2j * torch.pi * phase)
        previous = torch.zeros_like(spec)
        for _ in range(self.iterations):
            projected = self._stft(self._istft(spec, length))
            accelerated = projected + self.momentum * (projected - previous)
            previous = projected
            spec = magnitude * accelerated / accelerated.abs().clamp_min(_TINY)
        return self._istft(spec, length).unsqueeze(1)  # [B, 1, F * hop]

"""The spectrogram path of Noise2Music (arXiv 2302.03917, sections 3.2 and 4, tables 7-8): two more training stages.

- ``spec_generator``: text -> log-mel spectrogram of 30 s (80 mel channels, 100 frames/s, values in [-1, 1]; the
  frontend is :mod:`n2m.training.mel`). ``sigma^2`` loss weighting (the paper found it crucial here), linear schedule,
  96 text tokens. On the 1D U-Net the 80 mel channels are the input/output channels and time is the length axis.
  Its "sample rate" is the frame rate, 100 Hz. Paper preset: base 256, strides [4, 3, 2, 2, 2], channels
  256 x [1, 2, 2, 3, 4], 755M parameters with n2m's block counts (paper: 745M).
- ``vocoder``: spectrogram -> 16 kHz waveform, no text. The spectrogram enters at the bottom of the U (strides
  [2, 4, 4, 5] multiply to the mel hop, 160, so the bottom runs at the frame rate), with conditioning augmentation:
  diffusion noise at ``t in [0, 1]`` and a 2D Gaussian blur (5 x 5 taps over mel x time, ``sigma`` 0.2-1.0).
  Paper preset: base 128, channels 128 x [1, 1, 2, 4], 26.0M parameters (paper: 25.7M).

Each stage is one entry of :data:`SPECTROGRAM_STAGES` (:class:`n2m.training.stage_spec.StageSpec`): its training examples
(the mel computed on the fly in the loader workers), its conditioning augmentation (:class:`SpectrogramAugmentation`),
what it samples from (:func:`vocoder_inputs`) and the paper's sampling settings (table 7).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from n2m.audio import resample
from n2m.training.conditioning import fit_frames
from n2m.training.diffusion.augment import ConditioningAugmentation
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.mel import MelConfig, MelFrontend
from n2m.training.networks.presets import Architecture
from n2m.training.stage_spec import (
    Example,
    Noise,
    SamplingDefaults,
    StageInput,
    StageSpec,
    augmented,
    generator_inputs,
)

if TYPE_CHECKING:
    from n2m.training.cascade import StageModel

MEL = MelConfig()
AUDIO_RATE = MEL.sample_rate  # the spectrogram describes 16 kHz audio
FRAME_RATE = int(MEL.frames_per_second)  # 100

_D, _T = False, True

SPEC_GENERATOR = Architecture(
    channel_mults=(1, 2, 2, 3, 4), strides=(4, 3, 2, 2, 2), num_res_blocks=(2, 4, 8, 16, 28),
    self_attention=(_D, _D, _T, _T, _T), cross_attention=(_D, _D, _T, _T, _T), text=True,
    in_channels=MEL.n_mels, out_channels=MEL.n_mels,
    # small: the top level is at least as wide as the 80 mel channels it takes in and gives out (96; at 64 the stem and
    # head squeeze 80 channels through 64, and the noise in the lost directions cannot be predicted: val loss at t = 0.1
    # stayed at 0.35 after 400 steps, 0.20 at 96, and samples from noise kept half the noise's amplitude), then gentle
    # growth (96, 192, 192, 288), and the gated linear path from x_t to the output (UNetConfig.input_skip): on one
    # track, after 700 steps, samples' frame-to-frame change fell from 4x the real spectrogram's to 1.8x with it. That
    # path filters x_t over 31 frames per mel channel (input_skip_taps): a sustained partial is one channel held for
    # tens of frames, and averaging x_t along it is the denoiser a 96-channel top level cannot learn in CPU minutes. The
    # demo's recipe for 900 steps, measured on the training tracks only: validation loss 0.358 -> 0.273, x0 error at
    # t = 0.3 / 0.5 0.0054 / 0.0082 -> 0.0031 / 0.0055; samples of 14 training captions: FAD_musicnn 110 -> 70, median
    # spectral flatness 0.35 -> 0.13 (the real tracks': at most 0.10)
    preset_overrides={"small": {"base_channels": 96, "channel_mults": (1, 2, 2, 3), "input_skip": True,
                                "input_skip_taps": 31}},
)
VOCODER = Architecture(
    channel_mults=(1, 1, 2, 4), strides=(2, 4, 4, 5), num_res_blocks=(1, 1, 3, 4),
    self_attention=(_D,) * 4, cross_attention=(_D,) * 4, text=False, aligned_channels=MEL.n_mels,
    # every preset keeps a total stride of 160 (the mel hop), so the bottom runs at the frame rate; paper: base 128.
    # small: one level of 10 ms patches (stride 160, width 256, four blocks), where the mel is added: the spectrogram
    # meets the waveform's patch features directly. A four-level small vocoder still ignored its mel after 1,200
    # training steps (its output did not change when the mel was replaced by another clip's or by silence); the
    # one-level form used it after 300 (validation corpus, not the demo's held-out tracks).
    preset_overrides={"paper": {"base_channels": 128}, "tiny": {"strides": (10, 16)},
                      "small": {"strides": (160,), "channel_mults": (8,), "num_res_blocks": (4,),
                                "self_attention": (_D,), "cross_attention": (_D,)}},
)


# ---------------------------------------------------------------------------------------------------------------------
# Training examples (data-loader workers; mel computed on the fly on the CPU)

_FRONTEND = MelFrontend(MEL)


def _audio_window(mono: np.ndarray, sr: int, samples: int, offset_frac: float) -> np.ndarray:
    """``[C, samples]`` of 16 kHz audio starting at ``offset_frac`` of the free range (zero-padded when short)."""
    x = resample(mono, sr, AUDIO_RATE)
    start = int(offset_frac * max(0, x.shape[1] - samples))
    return fit_frames(x[:, start:], samples)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """``[1, T]`` 16 kHz audio -> ``[n_mels, T // hop]`` float32 scaled log-mel."""
    with torch.no_grad():
        return _FRONTEND(torch.from_numpy(np.ascontiguousarray(audio[:1], dtype=np.float32)))[0].numpy()


def spectrogram_example(mono: np.ndarray, sr: int, stage: StageSpec, window: int, offset_frac: float) -> dict:
    """spec_generator: ``x0`` = the log-mel ``[80, window]`` of ``window`` frames of the clip."""
    return {"x0": log_mel(_audio_window(mono, sr, window * MEL.hop, offset_frac))}


def vocoder_example(mono: np.ndarray, sr: int, stage: StageSpec, window: int, offset_frac: float) -> dict:
    """vocoder: ``x0`` = ``window`` samples of 16 kHz audio ``[1, window]``, ``aligned`` = its log-mel
    ``[80, window // 160]`` (the data module cuts both at the same time in their own time bases)."""
    audio = _audio_window(mono, sr, window, offset_frac)
    return {"x0": audio, "aligned": log_mel(audio)}


# ---------------------------------------------------------------------------------------------------------------------
# The vocoder's conditioning augmentation: 2D blur + diffusion noise on the spectrogram

BLUR_2D = 5  # taps per axis (Noise2Music: "2D blur with a 5x5 kernel")


def blur_2d(mel: torch.Tensor, sigma: torch.Tensor, size: int = BLUR_2D) -> torch.Tensor:
    """Blur each spectrogram ``[B, M, F]`` over (mel, time) with an isotropic ``size x size`` Gaussian of std
    ``sigma`` ``[B]`` (in bins/frames); separable, reflect-padded, same shape."""
    b, m, f = mel.shape
    offsets = torch.arange(size, dtype=torch.float32, device=mel.device) - (size - 1) / 2
    kernels = torch.exp(-0.5 * (offsets[None] / sigma.float()[:, None]) ** 2)
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(mel.dtype)  # [B, size]
    pad = (size // 2, size // 2)
    x = mel.reshape(1, b, m, f)
    x = F.conv2d(F.pad(x, (*pad, 0, 0), mode="reflect"), kernels[:, None, None, :], groups=b)  # along time
    x = F.conv2d(F.pad(x, (0, 0, *pad), mode="reflect"), kernels[:, None, :, None], groups=b)  # along mel
    return x.reshape(b, m, f)


class SpectrogramAugmentation(ConditioningAugmentation):
    """Random 2D blur then diffusion noise ``alpha z + sigma eps`` at ``t_aug ~ U[0, t_max]`` on a spectrogram
    ``[B, M, F]`` (Noise2Music section 3.1; Ho et al. 2022 for noise augmentation)."""

    blur_fn = staticmethod(blur_2d)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling: the vocoder's input, then the two stages


def vocoder_inputs(model: StageModel, prev: torch.Tensor, batch: int, seconds: float, aug_t: float,
                   noise: Noise) -> StageInput:
    """Vocoder: the generated spectrogram ``[B, 80, F]`` enters at the bottom of the U; the audio has ``F * hop``
    samples."""
    mel, level = augmented(SpectrogramAugmentation, model, prev.float(), aug_t, noise)
    return StageInput((batch, model.model.net.cfg.in_channels, prev.shape[-1] * MEL.hop),
                      Conditioning(aligned=mel, aug_t=level), aligned=("aligned",), frame=MEL.hop)


SPECTROGRAM_STAGES: tuple[StageSpec, ...] = (
    StageSpec(
        name="spec_generator",
        description="text -> 80-channel log-mel spectrogram at 100 frames/s, full 30 s clips",
        example=Example("spectrogram", spectrogram_example),
        sample_rate=FRAME_RATE,
        cond_rate=None,
        window_s=(30.0, 30.0),
        text=True,
        token_length=96,
        schedule="linear",
        weighting="sigma",
        parametrisation="eps",
        cfg_dropout=0.1,
        aug_t_max=0.0,
        aug_blur_sigma=None,
        paper_steps=1_800_000,
        architecture=SPEC_GENERATOR,
        inputs=generator_inputs,
        sampling=SamplingDefaults(steps=1000, gamma=0.0, guidance=5.0),
    ),
    StageSpec(
        name="vocoder",
        description="log-mel spectrogram (100 frames/s) -> 16 kHz waveform (no text), random 3-4 s windows",
        example=Example("vocoder", vocoder_example),
        sample_rate=AUDIO_RATE,
        cond_rate=FRAME_RATE,
        window_s=(3.0, 4.0),
        text=False,
        token_length=0,
        schedule="linear",
        weighting="simplified",
        parametrisation="eps",
        cfg_dropout=0.0,
        aug_t_max=1.0,
        aug_blur_sigma=(0.2, 1.0),
        paper_steps=840_000,
        architecture=VOCODER,
        inputs=vocoder_inputs,
        sampling=SamplingDefaults(steps=100, gamma=0.0, guidance=1.0),
        augmentation=SpectrogramAugmentation,
    ),
)

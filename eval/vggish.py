"""VGGish (Hershey et al. 2017, arXiv 1609.09430) in PyTorch: log-mel frontend, the VGG network and the PCA postprocessor.

The layer layout matches the widely used torchvggish port (harritaylor/torchvggish), so its state dict loads as is:
``features.{0,3,6,8,11,13}.{weight,bias}``, ``embeddings.{0,2,4}.{weight,bias}`` and, for postprocessing, the PCA
parameters under ``pproc.pca_eigen_vectors``/``pproc.pca_means`` (or ``pproc._pca_matrix``/``pproc._pca_means``),
possibly in a separate file with keys ``pca_eigen_vectors``/``pca_means``.

Frontend (AudioSet's ``mel_features.py``): mono 16 kHz; 25 ms periodic-Hann frames every 10 ms (400/160 samples),
|rfft| of 512 points, 64 HTK-mel bands from 125 to 7500 Hz with triangles in the mel domain (DC bin zeroed),
``log(mel + 0.01)``. Examples are 96 frames x 64 bands (0.96 s). Two framings of the waveform (FRAMINGS):

- ``torchvggish`` (default; the torchvggish port, fadtk): the log-mel of the whole clip is cut into non-overlapping
  0.96 s examples; samples are used as decoded (no normalisation).
- ``google`` (Google's original FAD, google-research/frechet_audio_distance): each clip is first scaled by
  ``x / max(0.1, max|x|)`` (peak over the whole clip), then cut into 1 s windows with a 0.5 s hop; each window gives
  one example (its first 96 log-mel frames).

FAD values differ by several percent between the two, so the framing is part of every cache key and report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from n2m.audio import AudioError
from n2m.errors import UserError

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512  # next power of two of WINDOW
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
LOG_OFFSET = 0.01
EXAMPLE_FRAMES = 96  # 0.96 s
EMBEDDING_SIZE = 128
QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0


# ---------------------------------------------------------------------------------------------------------------------
# Frontend


def hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """``[N_FFT // 2 + 1, N_MELS]`` weights of AudioSet's ``spectrogram_to_mel_matrix`` (triangles in mel, DC zeroed)."""
    bins_mel = hz_to_mel_htk(np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1))
    edges = np.linspace(hz_to_mel_htk(F_MIN), hz_to_mel_htk(F_MAX), N_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


class LogMel(nn.Module):
    """Waveform ``[T]`` at 16 kHz -> log-mel ``[1 + (T - 400) // 160, 64]`` (no padding, as AudioSet's frontend)."""

    def __init__(self):
        super().__init__()
        n = torch.arange(WINDOW, dtype=torch.float64)
        self.register_buffer("window", (0.5 - 0.5 * torch.cos(2 * math.pi * n / WINDOW)).float(), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_matrix()).float(), persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave.unfold(-1, WINDOW, HOP) * self.window  # [F, 400]
        magnitude = torch.fft.rfft(frames, n=N_FFT).abs()  # [F, 257]
        return torch.log(magnitude @ self.mel + LOG_OFFSET)  # [F, 64]


# ---------------------------------------------------------------------------------------------------------------------
# Framings: waveform [T] -> examples [N, 96, 64]


def _examples_torchvggish(wave: torch.Tensor, logmel: LogMel) -> torch.Tensor:
    spec = logmel(wave)  # [F, 64]
    count = spec.shape[0] // EXAMPLE_FRAMES
    return spec[: count * EXAMPLE_FRAMES].reshape(count, EXAMPLE_FRAMES, N_MELS)


def _examples_google(wave: torch.Tensor, logmel: LogMel) -> torch.Tensor:
    wave = wave / torch.clamp(wave.abs().max(), min=0.1)
    windows = wave.unfold(-1, SAMPLE_RATE, SAMPLE_RATE // 2)  # [W, 16000]: 1 s windows, 0.5 s hop
    spec = logmel(windows)  # [W, 98, 64]
    return spec[:, :EXAMPLE_FRAMES]


FRAMINGS = {
    "torchvggish": (_examples_torchvggish, (WINDOW + (EXAMPLE_FRAMES - 1) * HOP) / SAMPLE_RATE),
    "google": (_examples_google, 1.0),
}


# ---------------------------------------------------------------------------------------------------------------------
# Network


def _features() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 1
    for width in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M"):
        if width == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
    return nn.Sequential(*layers)


class VGGish(nn.Module):
    """Examples ``[N, 96, 64]`` -> embeddings ``[N, 128]`` (the final ReLU kept, as in torchvggish)."""

    def __init__(self):
        super().__init__()
        self.features = _features()
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096), nn.ReLU(True), nn.Linear(4096, 4096), nn.ReLU(True),
            nn.Linear(4096, EMBEDDING_SIZE), nn.ReLU(True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples[:, None])  # [N, 512, 6, 4]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # TF's NHWC flattening order
        return self.embeddings(x)


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvggish-layout state dict with random weights for tests and benchmarks (not a model to evaluate with).

    He-normal weights and small positive biases keep activations alive through the 6 convolutions and 3 ReLU layers
    (PyTorch's default init drives the 128-d output to ~0 on log-mel input); PCA parameters are a random rotation.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in VGGish().state_dict().items()}
    state = {}
    for key, shape in shapes.items():
        if key.endswith("weight"):
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
        else:
            state[key] = torch.full(shape, 0.01)
    state["pproc.pca_eigen_vectors"] = torch.linalg.qr(torch.randn(EMBEDDING_SIZE, EMBEDDING_SIZE,
                                                                   generator=generator))[0]
    state["pproc.pca_means"] = torch.randn(EMBEDDING_SIZE, 1, generator=generator) * 0.1
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Postprocessing (AudioSet release: PCA with whitening, then 8-bit quantisation)


def _pca(x: torch.Tensor, matrix: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    return (x - means.reshape(1, -1)) @ matrix.T


def _pca_quantized(x: torch.Tensor, matrix: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    clipped = torch.clamp(_pca(x, matrix, means), QUANTIZE_MIN, QUANTIZE_MAX)
    return torch.round((clipped - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN)))


POSTPROCESS = {"none": None, "pca": _pca, "pca_quantized": _pca_quantized}

_PCA_KEYS = (
    ("pproc.pca_eigen_vectors", "pproc.pca_means"),
    ("pproc._pca_matrix", "pproc._pca_means"),
    ("pca_eigen_vectors", "pca_means"),
)


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"VGGish weights not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable weights file is the user's to fix
        raise UserError(f"cannot read VGGish weights {path}: {err}") from err
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {k: torch.as_tensor(v) for k, v in state.items()}


def pca_params(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(matrix [128, 128], means [128])`` from any of the key spellings, or None."""
    for matrix_key, means_key in _PCA_KEYS:
        if matrix_key in state and means_key in state:
            matrix = state[matrix_key].float()
            means = state[means_key].float().reshape(-1)
            if matrix.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE) or means.shape != (EMBEDDING_SIZE,):
                raise UserError(f"bad PCA parameter shapes {tuple(matrix.shape)} / {tuple(means.shape)}")
            return matrix, means
    return None


@dataclass(frozen=True)
class VGGishSettings:
    framing: str = "torchvggish"
    postprocess: str = "none"

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise UserError(f"unknown VGGish framing {self.framing!r}; choose from {sorted(FRAMINGS)}")
        if self.postprocess not in POSTPROCESS:
            raise UserError(f"unknown VGGish postprocess {self.postprocess!r}; choose from {sorted(POSTPROCESS)}")


class VGGishEmbedder(nn.Module):
    """Mono 16 kHz waveform ``[T]`` -> per-example embeddings ``[N, 128]`` with the chosen framing and postprocessing."""

    def __init__(self, network: VGGish, settings: VGGishSettings, pca: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        if settings.postprocess != "none" and pca is None:
            raise UserError(f"postprocess {settings.postprocess!r} needs PCA parameters (pca_eigen_vectors, pca_means)")
        self.network = network.eval()
        self.logmel = LogMel()
        self.settings = settings
        if pca is not None:
            self.register_buffer("pca_matrix", pca[0])
            self.register_buffer("pca_means", pca[1])

    @classmethod
    def from_files(cls, weights: str | Path, settings: VGGishSettings, pca_file: str | Path | None = None,
                   device: str = "cpu") -> VGGishEmbedder:
        """Load torchvggish weights (and PCA parameters from the same or a separate file)."""
        state = load_state(weights)
        pca = pca_params(load_state(pca_file)) if pca_file else pca_params(state)
        with torch.device("meta"):  # no random init of 72M weights that are about to be replaced
            network = VGGish()
        wanted = {k: v.float() for k, v in state.items() if k.startswith(("features.", "embeddings."))}
        missing, unexpected = network.load_state_dict(wanted, strict=False, assign=True)
        if missing or unexpected:
            raise UserError(f"{weights} is not a torchvggish state dict (missing {missing[:4]}, unexpected "
                            f"{unexpected[:4]})")
        return cls(network, settings, pca if settings.postprocess != "none" else None).to(device)

    @property
    def min_seconds(self) -> float:
        return FRAMINGS[self.settings.framing][1]

    def examples(self, wave: torch.Tensor) -> torch.Tensor:
        """``[T]`` -> ``[N, 96, 64]`` log-mel examples of the chosen framing."""
        return FRAMINGS[self.settings.framing][0](wave, self.logmel)

    @torch.inference_mode()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        examples = self.examples(wave)
        if examples.shape[0] == 0:
            raise AudioError("too_short", f"{wave.shape[-1] / SAMPLE_RATE:.3f} s is shorter than one VGGish example "
                             f"({self.min_seconds:.3f} s)")
        out = self.network(examples)
        post = POSTPROCESS[self.settings.postprocess]
        return out if post is None else post(out, self.pca_matrix, self.pca_means)

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """Mono float32 ``[T]`` at 16 kHz -> float32 ``[N, 128]``."""
        device = next(self.network.parameters()).device
        return self(torch.from_numpy(np.ascontiguousarray(wave, np.float32)).to(device)).float().cpu().numpy()

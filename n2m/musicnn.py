"""musicnn music taggers (Pons & Serra 2019, arXiv 1909.06654) as n2m's reference audio analyser: tags and features.

Four released models, fetched and converted by ``n2m models fetch``: ``MTT_musicnn`` and ``MTT_vgg`` (MagnaTagATune,
50 tags), ``MSD_musicnn`` and ``MSD_vgg`` (Million Song Dataset, 50 tags); the networks are in
:mod:`n2m.musicnn_net`. Evaluation and labelling both use this one code path.

Front end (as ``musicnn/extractor.py``'s ``batch_data``):
  1. Channels averaged to mono (:func:`n2m.audio.downmix`), resampled to 16 kHz with soxr HQ (:func:`n2m.audio.resample`).
  2. Power mel spectrogram with librosa: 512-point FFT (Hann), hop 256, 96 Slaney mel bands, centred frames with the
     ends padded by reflection (librosa 0.7's default, which the models were trained with; librosa >= 0.10 pads zeros).
  3. ``log10(1 + 10000 * mel)`` in float32. The original casts the mel spectrogram to float16 first; with numpy >= 2
     (NEP 50: the Python scalar no longer promotes the product to float32) ``10000 * mel`` stays float16 and
     overflows to inf on loud bins, which corrupts every later layer. No cast here.
  4. Patches of 187 frames (3 s) from frame 0, every ``hop_frames`` frames (default 187: no overlap); frames after the
     last whole patch are dropped, as in the original. A clip shorter than one patch is one patch, its frames tiled
     and cut to 187 (``repeat-pad``, the padding of the models' training code, musicnn-training ``pad_short``; the
     original extractor fails on such clips, with no patch to feed).

Features (:attr:`Musicnn.layers`), one ``[P, D]`` vector per patch. Time-distributed layers are reduced per patch:
  musicnn: ``timbral`` ``[P, 408]``, ``temporal`` ``[P, 153]``, ``cnn1``/``cnn2``/``cnn3`` ``[P, 64]``: the mean over
  the patch's 187 frames (these equal slices of ``mean_pool``); ``mean_pool``, ``max_pool`` ``[P, 753]`` and
  ``penultimate`` ``[P, 200]`` (the batch-normalised 200-unit dense layer before the tag layer) are per patch already.
  VGG: ``pool1``..``pool4`` ``[P, 128]``: the mean over the layer's time and frequency positions; ``pool5``
  ``[P, 256]``: its ``[2, 1, 128]`` map flattened in TensorFlow's order, the tag layer's input.
:meth:`Musicnn.layer_outputs` gives the unreduced layers (``tests/test_musicnn.py`` checks both against TensorFlow).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch

from n2m.audio import downmix, resample
from n2m.errors import UserError
from n2m.musicnn_net import ARCHITECTURES
from n2m.provenance import dir_hash

SAMPLE_RATE = 16000
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_FRAMES = 187


def log_mel(wave_16k: np.ndarray) -> np.ndarray:
    """Mono ``[T]`` at 16 kHz -> ``log10(1 + 10000 * mel)`` float32 ``[frames, 96]``, ``frames = 1 + T // 256``."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.ascontiguousarray(wave_16k, dtype=np.float32), sr=SAMPLE_RATE,
                                         n_fft=N_FFT, hop_length=HOP_LENGTH, n_mels=N_MELS, pad_mode="reflect").T
    return np.log10(10000 * mel + 1).astype(np.float32, copy=False)  # [frames, mels]


def patches(wave_16k: np.ndarray, hop_frames: int | None = None) -> np.ndarray:
    """Mono ``[T]`` at 16 kHz -> log-mel patches float32 ``[P, 187, 96]`` (module docstring, steps 2-4)."""
    wave = np.asarray(wave_16k)
    if wave.ndim != 1 or wave.size == 0:
        raise UserError(f"musicnn needs a non-empty mono signal, got shape {wave.shape}")
    hop = PATCH_FRAMES if hop_frames is None else int(hop_frames)
    if hop < 1:
        raise UserError(f"hop_frames must be at least 1, got {hop}")
    frames = log_mel(wave)
    if frames.shape[0] < PATCH_FRAMES:
        frames = np.tile(frames, (-(-PATCH_FRAMES // frames.shape[0]), 1))[:PATCH_FRAMES]
    starts = range(0, frames.shape[0] - PATCH_FRAMES + 1, hop)
    return np.stack([frames[s:s + PATCH_FRAMES] for s in starts])


@dataclass
class MusicnnOutput:
    """One clip's analysis: ``taggram`` ``[P, tags]`` sigmoid probabilities; ``features`` name -> ``[P, D]``."""

    taggram: np.ndarray
    features: dict[str, np.ndarray]
    tags: list[str]


class Musicnn:
    """A musicnn or VGG tagger loaded from an ``n2m models fetch`` folder (``model.safetensors`` + ``config.json``)."""

    SAMPLE_RATE = SAMPLE_RATE
    PATCH_FRAMES = PATCH_FRAMES

    def __init__(self, net: torch.nn.Module, config: dict, model_id: str, path: str, device: str = "cpu"):
        self.net = net.to(device).eval()
        self.config = config
        self.name = str(config["name"])
        self.tags: list[str] = list(config["tags"])
        self.layers: tuple[str, ...] = tuple(net.layers)
        self.model_id = model_id
        self.path = path
        self.device = torch.device(device)

    @classmethod
    def from_pretrained(cls, name_or_dir: str, device: str = "cpu") -> Musicnn:
        """Load ``MSD_musicnn``, ``MTT_vgg``, ... (installed by ``n2m models fetch``) or a model folder by path."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from n2m.models import model_dir

        root = model_dir(name_or_dir)
        try:
            config = json.loads((root / "config.json").read_text())
            arch = ARCHITECTURES[config["architecture"]]
            net = arch(**config["network"])
            state = load_file(str(root / "model.safetensors"))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise UserError(f"{root} is not a musicnn model folder ({type(err).__name__}: {err})") from err
        missing, unexpected = net.load_state_dict(state, strict=False)
        missing = [key for key in missing if not key.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise UserError(f"{root}: weights do not fit the {config['architecture']} network "
                            f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"device {device} requested but no CUDA device is available")
        return cls(net, config, f"musicnn:{config['name']}@{dir_hash(root)}", str(root), device=device)

    def patches(self, wave_16k: np.ndarray, hop_frames: int | None = None) -> np.ndarray:
        """Mono ``[T]`` at 16 kHz -> log-mel patches float32 ``[P, 187, 96]`` (:func:`patches`)."""
        return patches(wave_16k, hop_frames)

    # -----------------------------------------------------------------------------------------------------------------
    # Network

    @torch.inference_mode()
    def layer_outputs(self, patches: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Patches ``[P, 187, 96]`` -> ``taggram`` ``[P, tags]``, ``logits`` and every layer unreduced, in the
        original's layout (:mod:`n2m.musicnn_net`), float32 numpy."""
        chunks: dict[str, list[np.ndarray]] = {}
        cudnn = torch.backends.cudnn  # full float32 convolutions: cuDNN's default TF32 keeps 10 mantissa bits
        with cudnn.flags(enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic,
                         allow_tf32=False):
            for start in range(0, len(patches), batch_size):
                x = torch.as_tensor(np.asarray(patches[start:start + batch_size], dtype=np.float32),
                                    device=self.device)
                out = self.net(x)
                out["taggram"] = torch.sigmoid(out["logits"])
                for key, value in out.items():
                    chunks.setdefault(key, []).append(value.float().cpu().numpy())
        return {key: np.concatenate(parts) for key, parts in chunks.items()}

    @staticmethod
    def reduce(name: str, value: np.ndarray) -> np.ndarray:
        """One layer ``[P, ...]`` -> ``[P, D]`` by the rule of the module docstring."""
        if name == "pool5":
            return value.reshape(value.shape[0], -1)
        if value.ndim == 3:  # [P, T, C]
            return value.mean(axis=1)
        if value.ndim == 4:  # [P, T, F, C]
            return value.mean(axis=(1, 2))
        return value

    def analyse(self, wave: np.ndarray, sample_rate: int, hop_frames: int | None = None,
                batch_size: int = 32) -> MusicnnOutput:
        """One clip ``[T]`` or ``[C, T]`` float at any rate -> tag probabilities and features per 3 s patch."""
        samples = np.asarray(wave, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[None, :]
        if samples.ndim != 2:
            raise UserError(f"expected a clip [C, T] or [T], got shape {samples.shape}")
        mono = resample(downmix(samples), int(sample_rate), self.SAMPLE_RATE)[0]
        out = self.layer_outputs(self.patches(mono, hop_frames), batch_size=batch_size)
        features = {name: self.reduce(name, out[name]) for name in self.layers}
        return MusicnnOutput(taggram=out["taggram"], features=features, tags=self.tags)


def model_config(name: str, architecture: str, tags: list[str], network: dict) -> dict:
    """The ``config.json`` of a converted model: what :meth:`Musicnn.from_pretrained` rebuilds it from."""
    return {
        "name": name, "architecture": architecture, "tags": tags, "network": network,
        "sample_rate": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP_LENGTH, "n_mels": N_MELS,
        "patch_frames": PATCH_FRAMES,
        "front_end": "log10(1 + 10000 * mel), Slaney mel, reflect-padded centred STFT",
    }


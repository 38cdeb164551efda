"""Registry of embedding models for FAD, the CLAP score and the musicnn judge: ``vggish:WEIGHTS``, ``clap:DIR`` and
``musicnn[:MODEL[:LAYER]]``.

An :class:`Embedder` turns one mono waveform ``[T]`` at its ``sample_rate`` into frame embeddings ``[F, D]``. Its
``model_id`` names the model and the hash of its weights, and ``settings`` every option that changes the numbers; both
go into the cache key and the report.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from n2m.audio import AudioError
from n2m.errors import UserError
from n2m.provenance import file_hash


class Embedder(Protocol):
    name: str
    model_id: str
    sample_rate: int
    min_seconds: float
    settings: dict[str, Any]

    def embed(self, wave: np.ndarray) -> np.ndarray:
        """Mono float32 ``[T]`` at ``sample_rate`` -> float32 ``[F, D]`` (what the cache stores)."""

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        """Cached ``[F, D]`` -> the frames whose Gaussian FAD compares ``[F, D]``."""

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        """Cached ``[F, D]`` -> one ``[D]`` vector for the whole clip (the CLAP score's audio side)."""


@dataclass(frozen=True)
class EmbeddingOptions:
    """Options of the embedding models (CLI flags); each model reads its own."""

    device: str = "cpu"
    vggish_framing: str = "torchvggish"
    vggish_postprocess: str = "none"
    vggish_pca: str | None = None
    clap_min_s: float = 1.0


# ---------------------------------------------------------------------------------------------------------------------
# VGGish


class _VGGish:
    """VGGish example embeddings; FAD uses every example, a clip's vector is their mean."""

    name = "vggish"

    def __init__(self, path: str, options: EmbeddingOptions):
        from n2m.eval.vggish import SAMPLE_RATE, VGGishEmbedder, VGGishSettings

        _require_path("vggish", path, "WEIGHTS.pth")
        settings = VGGishSettings(options.vggish_framing, options.vggish_postprocess)
        self.module = VGGishEmbedder.from_files(path, settings, options.vggish_pca, options.device)
        weights = file_hash(path)
        pca = file_hash(options.vggish_pca) if options.vggish_pca and options.vggish_postprocess != "none" else None
        self.model_id = f"vggish:{weights}" + (f"+pca:{pca}" if pca else "")
        self.sample_rate = SAMPLE_RATE
        self.min_seconds = self.module.min_seconds
        self.settings = {"framing": settings.framing, "postprocess": settings.postprocess}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        return self.module.embed(wave)

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        return raw.mean(axis=0)


# ---------------------------------------------------------------------------------------------------------------------
# CLAP (n2m.clap.ClapEmbedder: the model the labelling backends load, with its deterministic window rules)


class _Clap:
    """The cache holds the raw (un-normalised) embeddings of the clip's windows ``[W, D]``, as cut by
    :meth:`n2m.clap.ClapEmbedder.prepare` (non-overlapping 10 s windows from 0, tail kept when >= half a window,
    repeat-padded). FAD compares the L2-normalised windows (the vectors LAION's API returns); a clip's vector is the
    L2-normalised mean of its raw windows, exactly :meth:`ClapEmbedder.embed_audio`."""

    name = "clap"

    def __init__(self, path: str, options: EmbeddingOptions):
        from n2m.clap import ClapEmbedder

        _require_path("clap", path, "DIR")
        self.model = ClapEmbedder.from_pretrained(path, options.device)
        self.model_id = f"clap:{self.model.model_id}"
        self.sample_rate = int(self.model.sample_rate)
        self.min_seconds = options.clap_min_s
        self.settings = {"window_s": self.model.window_s, "min_tail_s": self.model.min_tail_s,
                         "fusion": self.model.fusion}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        windows = self.model.prepare(wave, self.sample_rate)
        if not windows:
            raise AudioError("too_short", "no CLAP window in the clip")
        return self.model.embed_windows(windows)

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        from n2m.clap import l2_normalise

        return l2_normalise(raw)

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        from n2m.clap import l2_normalise

        return l2_normalise(raw.mean(axis=0, keepdims=True))[0]

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """``[N, D]`` L2-normalised text embeddings."""
        return np.asarray(self.model.embed_text(list(texts)), np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# musicnn (n2m.musicnn.Musicnn: Pons & Serra 2019, arXiv 1909.06654)

MUSICNN_MODEL = "MSD_musicnn"
MUSICNN_LAYER = "penultimate"


@functools.lru_cache(maxsize=4)
def _musicnn_model(name: str, device: str):
    from n2m.musicnn import Musicnn

    return Musicnn.from_pretrained(name, device=device)


class MusicnnEmbedder:
    """musicnn features, one row per non-overlapping 3 s patch. As VGGish frames are in FAD (Kilgour et al. 2019,
    arXiv 1812.08466), every patch of the chosen layer ``[P, D]`` is one sample of FAD_musicnn. ``MODEL`` is an
    installed model name (``n2m models fetch``) or a model directory; the default layer is ``penultimate`` (the VGG
    models: ``pool5``, the tag layer's input). A clip shorter than 3 s is one patch, repeat-padded by the model; below
    ``min_seconds`` it is excluded.

    One forward pass serves FAD, the probe and the tags (:mod:`n2m.eval.adherence`): the cache holds ``[P, D + T]``, the
    layer's features followed by the ``T`` tag probabilities, and a clip's vector is the mean over patches of both,
    ``[D + T]``, which :meth:`split` separates."""

    name = "musicnn"
    min_seconds = 1.0

    def __init__(self, spec: str, options: EmbeddingOptions):
        model, _, layer = spec.partition(":")
        self.model = _musicnn_model(model or MUSICNN_MODEL, options.device)
        self.layer = layer or (MUSICNN_LAYER if MUSICNN_LAYER in self.model.layers else self.model.layers[-1])
        if self.layer not in self.model.layers:
            raise UserError(f"musicnn has no layer {self.layer!r}; choose from {', '.join(self.model.layers)}")
        self.model_id = self.model.model_id
        self.sample_rate = int(self.model.SAMPLE_RATE)
        self.tags = list(self.model.tags)
        self.settings = {"layer": self.layer, "patch_s": 3.0, "patch_hop": "none (non-overlapping)",
                         "cached": "layer features + tag probabilities", "clip": "mean over patches"}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        out = self.model.analyse(wave, self.sample_rate)
        return np.concatenate([out.features[self.layer], out.taggram], axis=1).astype(np.float32)

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        return raw[:, : -len(self.tags)]

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        return raw.mean(axis=0)

    def split(self, clip: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A clip vector ``[D + T]`` -> (mean layer features ``[D]``, mean tag probabilities ``[T]``)."""
        return clip[: -len(self.tags)], clip[-len(self.tags):]


def _require_path(name: str, path: str, what: str) -> None:
    if not path:
        raise UserError(f"embedding {name} needs a path: {name}:{what}")


EMBEDDINGS: dict[str, Callable[[str, EmbeddingOptions], Embedder]] = {"vggish": _VGGish, "clap": _Clap,
                                                                      "musicnn": MusicnnEmbedder}


def load(spec: str, options: EmbeddingOptions | None = None) -> Embedder:
    """An embedder from ``NAME[:ARGS]`` (``vggish:weights.pth``, ``clap:models/clap``, ``musicnn``,
    ``musicnn:MTT_musicnn:max_pool``)."""
    name, _, rest = spec.partition(":")
    if name not in EMBEDDINGS:
        raise UserError(f"unknown embedding {name!r} in {spec!r}; choose from {sorted(EMBEDDINGS)}")
    return EMBEDDINGS[name](rest, options or EmbeddingOptions())

"""Registry of embedding models for FAD and the CLAP score: ``vggish:WEIGHTS`` and ``clap:DIR``.

An :class:`Embedder` turns one mono waveform ``[T]`` at its ``sample_rate`` into frame embeddings ``[F, D]``. Its
``model_id`` names the model and the hash of its weights, and ``settings`` every option that changes the numbers; both
go into the cache key and the report.
"""

from __future__ import annotations

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
        from eval.vggish import SAMPLE_RATE, VGGishEmbedder, VGGishSettings

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


EMBEDDINGS: dict[str, Callable[[str, EmbeddingOptions], Embedder]] = {"vggish": _VGGish, "clap": _Clap}


def load(spec: str, options: EmbeddingOptions | None = None) -> Embedder:
    """An embedder from ``NAME:PATH`` (``vggish:weights.pth``, ``clap:models/clap``)."""
    name, sep, path = spec.partition(":")
    if not sep or not path:
        raise UserError(f"embedding {spec!r} must be NAME:PATH with NAME one of {sorted(EMBEDDINGS)}")
    if name not in EMBEDDINGS:
        raise UserError(f"unknown embedding {name!r}; choose from {sorted(EMBEDDINGS)}")
    return EMBEDDINGS[name](path, options or EmbeddingOptions())

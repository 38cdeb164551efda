"""CLAP joint audio-text embeddings (LAION CLAP, Wu et al. 2023, arXiv 2211.06687) in one deterministic code path.

A model is a directory of one of two kinds, told apart by its ``config.json`` (:meth:`ClapEmbedder.from_pretrained`):

- a transformers ``ClapModel`` (``config.json`` + weights, ``preprocessor_config.json`` of a ``ClapFeatureExtractor``
  and a tokenizer): a local copy of ``laion/clap-htsat-unfused``, the output of ``n2m clap convert`` (original LAION
  ``.pt`` checkpoints) or of ``n2m clap-train`` from scratch (:class:`HFClapEmbedder`);
- n2m's joint model on pretrained towers (a musicnn audio tower and a transformers text encoder with trained
  projection heads), the output of ``n2m clap-train --text-init ... --audio-init ...`` (:mod:`n2m.joint`).

Labelling, evaluation and training all embed through :class:`ClapEmbedder`, so the rules below hold everywhere and
either kind goes wherever a CLAP directory does. They change scores, so they are part of the contract:

Audio (one clip ``[C, T]`` or ``[T]`` float at any rate -> one ``[D]`` vector)
  1. Channels are averaged to mono, then resampled with soxr HQ (:func:`n2m.audio.resample`) to the model's rate
     (48 kHz for LAION CLAP).
  2. The clip is cut into non-overlapping windows of ``window_s`` (10 s, the model's ``max_length_s``) from its start.
     A trailing remainder of at least ``min_tail_s`` (default half a window) becomes one more window; a shorter one is
     dropped. A clip shorter than one window is one window. Windows that are shorter than ``window_s`` are
     repeat-padded as LAION CLAP trains them (``repeatpad``: the audio tiled ``floor(W / n)`` times, then zeros).
     Every window is exactly ``W`` samples, so no truncation ever applies (the extractor's ``rand_trunc`` random-crops
     longer inputs, its default ``fusion`` random-picks crops) and nothing random happens; for fusion models
     ``is_longer`` is ``False`` for every window (the extractor would flag one window at random). The log-mel
     features are the extractor's (on accelerators computed with ``torch.stft``, :meth:`HFClapEmbedder.features`).
  3. Each window goes through the audio tower and the projection *without* the final normalisation; the clip's
     embedding is the mean of these raw window embeddings, then L2-normalised (Noise2Music, arXiv 2302.03917,
     section 3.3: "the average of the CLAP embeddings of its 10-second segments").

Text
  Tokenised with the model's tokenizer (padding to the longest, truncation at the model's limit), embedded by the
  text tower + projection, L2-normalised. Embeddings are cached in memory per ``(model_id, sha1(text))`` (LRU).

transformers 5 returns ``BaseModelOutputWithPooling`` objects from ``get_*_features`` (already normalised); this
module calls the towers and projections directly to get the raw vectors.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from n2m.audio import downmix, resample
from n2m.errors import UserError
from n2m.provenance import dir_hash

DEFAULT_TEXT_CACHE = 65_536


def window_starts(n_samples: int, window: int, min_tail: int) -> list[tuple[int, int]]:
    """``(start, stop)`` sample ranges of a clip's windows (see the module docstring, rule 2).

    Non-overlapping windows of ``window`` samples from 0; a remainder of ``>= min_tail`` samples is one more (short)
    window; a clip shorter than ``window`` is one short window. Empty clips give no windows.
    """
    if n_samples <= 0:
        return []
    full = n_samples // window
    ranges = [(i * window, (i + 1) * window) for i in range(full)]
    tail = n_samples - full * window
    if tail and (full == 0 or tail >= min_tail):
        ranges.append((full * window, n_samples))
    return ranges


def repeat_pad(x: np.ndarray, length: int) -> np.ndarray:
    """LAION's ``repeatpad``: ``[n]`` -> ``[length]``, tiled ``floor(length / n)`` times then zero-padded."""
    n = x.shape[0]
    if n >= length:
        return x[:length]
    tiled = np.tile(x, length // n)
    return np.pad(tiled, (0, length - tiled.shape[0]))


def split_windows(mono: np.ndarray, window: int, min_tail: int) -> list[np.ndarray]:
    """Mono ``[T]`` at the model rate -> list of ``[window]`` float32 windows (rule 2)."""
    return [repeat_pad(mono[a:b], window).astype(np.float32, copy=False)
            for a, b in window_starts(mono.shape[0], window, min_tail)]


class ClapEmbedder:
    """A joint audio-text model, as every consumer sees it: L2-normalised ``[N, D]`` float32 audio and text embeddings.

    :meth:`from_pretrained` picks the implementation from the directory's ``config.json`` (:data:`MODEL_TYPES`): a
    transformers ``ClapModel`` (:class:`HFClapEmbedder`) or n2m's model on pretrained towers
    (:class:`n2m.joint.TowerEmbedder`). Both share the clip rules of the module docstring (:meth:`prepare`,
    :meth:`embed_audio`) and the text cache (:meth:`embed_text`); a subclass supplies the raw window embeddings
    (:meth:`raw_windows`), the uncached text embeddings, the token states and the two widths. ``model`` is the
    ``torch.nn.Module`` holding every weight (consumers move it and freeze it).
    """

    def __init__(self, model: torch.nn.Module, model_id: str, path: str, device: str, sample_rate: int,
                 window_s: float, min_tail_s: float | None = None, fusion: bool = False,
                 text_cache_size: int = DEFAULT_TEXT_CACHE):
        self.model = model.to(device).eval()
        self.model_id = model_id
        self.path = path
        self.device = torch.device(device)
        self.sample_rate = int(sample_rate)
        self.window_s = float(window_s)
        self.min_tail_s = self.window_s / 2 if min_tail_s is None else float(min_tail_s)
        self.fusion = bool(fusion)
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size

    # -----------------------------------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", **kwargs) -> ClapEmbedder:
        """Load a model directory (local only), dispatching on its ``config.json``'s ``model_type``: n2m's own types
        (:data:`MODEL_TYPES`) by their module, anything else as a transformers ``ClapModel``. A missing, unreadable or
        misfit directory is a one-line :class:`UserError`."""
        root = Path(path)
        if not (root / "config.json").is_file():
            raise UserError(f"{path} is not a CLAP model directory (no config.json); "
                            "use 'n2m clap convert' for LAION .pt checkpoints or 'n2m clap-train' to make one")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UserError(f"--device {device} requested but no CUDA device is available")
        module = MODEL_TYPES.get(str(_config_of(root).get("model_type")))
        loader = importlib.import_module(module).load if module else HFClapEmbedder.load
        return loader(root, device, **kwargs)

    @property
    def embed_dim(self) -> int:
        """``D``, the joint embedding size."""
        raise NotImplementedError

    @property
    def text_hidden_size(self) -> int:
        """``H`` of :meth:`text_token_states`."""
        raise NotImplementedError

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    # -----------------------------------------------------------------------------------------------------------------
    # Audio

    def prepare(self, clip: np.ndarray, sample_rate: int) -> list[np.ndarray]:
        """One clip ``[C, T]`` or ``[T]`` at ``sample_rate`` -> its ``[W]`` windows at the model rate (rules 1-2)."""
        samples = np.asarray(clip, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[None, :]
        if samples.ndim != 2:
            raise ValueError(f"expected a clip [C, T] or [T], got shape {samples.shape}")
        mono = resample(downmix(samples), int(sample_rate), self.sample_rate)[0]
        return split_windows(mono, self.window_samples, int(round(self.min_tail_s * self.sample_rate)))

    def raw_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        """A batch of ``[W]`` windows -> raw (un-normalised) embeddings ``[B, D]`` (no gradients)."""
        raise NotImplementedError

    def embed_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> np.ndarray:
        """Raw (un-normalised) embeddings of ``[W]`` windows -> ``[N, D]`` float32, ``batch_size`` windows at a time."""
        out = np.empty((len(windows), self.embed_dim), np.float32)
        for start in range(0, len(windows), batch_size):
            batch = windows[start:start + batch_size]
            out[start:start + len(batch)] = self.raw_windows(batch).float().cpu().numpy()
        return out

    def embed_audio(self, clips: list[np.ndarray], sample_rate: int, batch_size: int = 8) -> np.ndarray:
        """Clips ``[C, T]`` or ``[T]`` float32 at ``sample_rate`` -> ``[N, D]`` float32, L2-normalised (rule 3).

        Windows of all clips are batched together; an empty clip raises ``ValueError``.
        """
        per_clip = [self.prepare(clip, sample_rate) for clip in clips]
        for i, windows in enumerate(per_clip):
            if not windows:
                raise ValueError(f"clip {i} holds no audio")
        flat = [w for windows in per_clip for w in windows]
        raw = self.embed_windows(flat, batch_size) if flat else np.zeros((0, self.embed_dim), np.float32)
        out = np.empty((len(clips), self.embed_dim), np.float32)
        start = 0
        for i, windows in enumerate(per_clip):
            out[i] = raw[start:start + len(windows)].mean(axis=0)
            start += len(windows)
        return l2_normalise(out)

    # -----------------------------------------------------------------------------------------------------------------
    # Text

    def _embed_text_uncached(self, texts: list[str]) -> np.ndarray:
        """Texts -> ``[N, D]`` float32, L2-normalised."""
        raise NotImplementedError

    def text_token_states(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Text tower last hidden states ``[B, L, H]`` and attention mask ``[B, L]`` (``L = max_length``, or the
        tower's own limit when shorter). Used as a frozen text encoder (no gradients)."""
        raise NotImplementedError

    def embed_text(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Texts -> ``[N, D]`` float32, L2-normalised; cached per ``(model_id, sha1(text))`` in an LRU."""
        keys = [self.model_id + ":" + hashlib.sha1(t.encode("utf-8")).hexdigest() for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._text_cache))
        if missing:
            by_key = dict(zip(keys, texts))
            todo = [by_key[k] for k in missing]
            for start in range(0, len(todo), batch_size):
                vectors = self._embed_text_uncached(todo[start:start + batch_size])
                for key, vector in zip(missing[start:start + batch_size], vectors):
                    self._remember(key, vector)
        out = np.empty((len(texts), self.embed_dim), np.float32)
        for i, key in enumerate(keys):
            vector = self._text_cache.get(key)
            if vector is None:  # evicted while filling a request larger than the cache
                vector = self._embed_text_uncached([texts[i]])[0]
            else:
                self._text_cache.move_to_end(key)
            out[i] = vector
        return out

    def _remember(self, key: str, vector: np.ndarray) -> None:
        self._text_cache[key] = vector
        self._text_cache.move_to_end(key)
        while len(self._text_cache) > self._text_cache_size:
            self._text_cache.popitem(last=False)


def _config_of(root: Path) -> dict:
    try:
        config = json.loads((root / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load CLAP model from {root}: config.json is unreadable ({err})") from err
    if not isinstance(config, dict):
        raise UserError(f"cannot load CLAP model from {root}: config.json is not a JSON object")
    return config


def text_width_of(path: str) -> int:
    """``H`` of :meth:`ClapEmbedder.text_token_states` of a model directory, from its ``config.json`` alone (no
    weights loaded; for sizing a network before the encoder loads)."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise UserError(f"{path} is not a CLAP model directory (no config.json)")
    config = _config_of(root)
    module = MODEL_TYPES.get(str(config.get("model_type")))
    if module:
        return int(importlib.import_module(module).text_width(config))
    from transformers import AutoConfig

    try:
        return int(AutoConfig.from_pretrained(str(root), local_files_only=True).text_config.hidden_size)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"cannot read the text width of CLAP model {path}: {str(err).strip().splitlines()[0]}") from err


def embed_dim_of(path: str) -> int:
    """``D`` of :meth:`ClapEmbedder.embed_audio` / :meth:`ClapEmbedder.embed_text` of a model directory, from its
    ``config.json`` alone (n2m's own types record ``embed_dim``, a transformers ClapModel its ``projection_dim``), for
    sizing a network conditioned on the joint embedding before the model loads."""
    root = Path(path)
    if not (root / "config.json").is_file():
        raise UserError(f"{path} is not a joint model directory (no config.json)")
    config = _config_of(root)
    key = "embed_dim" if str(config.get("model_type")) in MODEL_TYPES else "projection_dim"
    try:
        return int(config[key])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"cannot read the embedding size of joint model {path}: config.json has no {key}") from err


# n2m's own joint-model directories: config.json ``model_type`` -> the module whose ``load(root, device, **kwargs)``
# reads them and whose ``text_width(config)`` sizes their token states. Any other model_type is a transformers
# ClapModel directory.
MODEL_TYPES: dict[str, str] = {"n2m_towers": "n2m.joint"}


class HFClapEmbedder(ClapEmbedder):
    """A transformers ``ClapModel`` with its ``ClapFeatureExtractor`` and tokenizer (LAION CLAP, converted or
    trained by ``n2m clap-train``)."""

    def __init__(self, model, feature_extractor, tokenizer, model_id: str, path: str, device: str = "cpu",
                 min_tail_s: float | None = None, text_cache_size: int = DEFAULT_TEXT_CACHE):
        super().__init__(model, model_id, path, device, sample_rate=int(feature_extractor.sampling_rate),
                         window_s=float(feature_extractor.max_length_s), min_tail_s=min_tail_s,
                         fusion=bool(model.config.audio_config.enable_fusion), text_cache_size=text_cache_size)
        self.feature_extractor = feature_extractor
        self.tokenizer = tokenizer
        self._mel: torch.Tensor | None = None  # [mels, bins], built on first use
        self._window: torch.Tensor | None = None

    @classmethod
    def load(cls, root: Path, device: str = "cpu", **kwargs) -> HFClapEmbedder:
        """Read a ClapModel directory. Weights that do not fit the config (missing, unexpected or differently shaped
        tensors, from transformers' loading info) are a one-line :class:`UserError` naming the first few."""
        from safetensors import SafetensorError
        from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

        try:
            with quiet_transformers():  # misfit weights are reported below, in one line
                model, info = ClapModel.from_pretrained(str(root), local_files_only=True, output_loading_info=True,
                                                        ignore_mismatched_sizes=True)
                feature_extractor = ClapFeatureExtractor.from_pretrained(str(root), local_files_only=True)
                tokenizer = AutoTokenizer.from_pretrained(str(root), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"cannot load CLAP model from {root}: {first}") from err
        misfit = weight_misfit(info)
        if misfit:
            raise UserError(f"CLAP model {root}: its weights do not fit its config.json ({misfit})")
        return cls(model, feature_extractor, tokenizer, dir_hash(root), str(root), device=device, **kwargs)

    @property
    def embed_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @property
    def text_hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    # -----------------------------------------------------------------------------------------------------------------
    # Audio

    def features(self, windows: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """``[W]`` windows -> the model's inputs: ``input_features`` ``[B, 1|4, frames, mels]`` and ``is_longer``.

        On a CPU, transformers' ``ClapFeatureExtractor`` (its NumPy STFT is the faster one there); on an accelerator
        the same log-mel computed with ``torch.stft`` on the device (:meth:`torch_log_mel`), so feature extraction
        does not dwarf the model's forward. ``tests/labeling/test_clap_embedder.py`` checks both agree.
        """
        if self.device.type == "cpu":
            out = self.feature_extractor(
                windows,
                sampling_rate=self.sample_rate,
                truncation="fusion" if self.fusion else "rand_trunc",
                padding="repeatpad",
                max_length=self.window_samples,
                return_tensors="pt",
            )
            features = out["input_features"].to(self.device, torch.float32)
        else:
            features = self.torch_log_mel(windows)
        inputs = {"input_features": features}
        if self.fusion:
            inputs["is_longer"] = torch.zeros((len(windows), 1), dtype=torch.bool, device=self.device)
        return inputs

    def torch_log_mel(self, windows: list[np.ndarray]) -> torch.Tensor:
        """The extractor's log-mel of exactly-``W`` windows with torch: Hann window, centred reflect-padded STFT,
        power, Slaney mel filters (HTK for fusion models, stacked 4 times), floor 1e-10, dB. ``[B, 1|4, frames, mels]``.
        """
        fe = self.feature_extractor
        if self._mel is None:
            filters = fe.mel_filters if self.fusion else fe.mel_filters_slaney  # [bins, mels]
            self._mel = torch.as_tensor(np.asarray(filters), dtype=torch.float32, device=self.device).T.contiguous()
            self._window = torch.hann_window(fe.fft_window_size, periodic=True, device=self.device)
        x = torch.as_tensor(np.stack(windows), dtype=torch.float32, device=self.device)  # [B, W]
        spec = torch.stft(x, n_fft=fe.fft_window_size, hop_length=fe.hop_length, window=self._window, center=True,
                          pad_mode="reflect", return_complex=True).abs().pow(2)  # [B, bins, frames]
        mel = 10.0 * torch.log10(torch.clamp(self._mel @ spec, min=1e-10))  # [B, mels, frames]
        mel = mel.transpose(1, 2).unsqueeze(1)  # [B, 1, frames, mels]
        return mel.expand(-1, 4, -1, -1).contiguous() if self.fusion else mel

    @torch.no_grad()
    def raw_audio_embeddings(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Audio tower + projection without normalisation: model inputs -> ``[B, D]``."""
        pooled = self.model.audio_model(**inputs).pooler_output
        return self.model.audio_projection(pooled)

    def raw_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        return self.raw_audio_embeddings(self.features(windows))

    # -----------------------------------------------------------------------------------------------------------------
    # Text

    def _tokenize(self, texts: list[str], **kwargs) -> dict[str, torch.Tensor]:
        tokens = self.tokenizer(list(texts), return_tensors="pt", truncation=True, **kwargs)
        return {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def _embed_text_uncached(self, texts: list[str]) -> np.ndarray:
        tokens = self._tokenize(texts, padding=True, max_length=self._text_max_length())
        pooled = self.model.text_model(**tokens).pooler_output
        return l2_normalise(self.model.text_projection(pooled).float().cpu().numpy())

    def _text_max_length(self) -> int:
        # RoBERTa-style position ids start after the padding index: keep room for it.
        limit = int(self.model.config.text_config.max_position_embeddings) - 2
        tok_limit = getattr(self.tokenizer, "model_max_length", limit) or limit
        return int(min(limit, tok_limit))

    @torch.no_grad()
    def text_token_states(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sequences are padded or truncated to exactly ``max_length`` (at most the tower's limit)."""
        max_length = min(int(max_length), self._text_max_length())
        tokens = self._tokenize(texts, padding="max_length", max_length=max_length)
        states = self.model.text_model(**tokens).last_hidden_state
        return states, tokens["attention_mask"]


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers without progress bars or load reports while loading (one bar per load per Beam worker is noise;
    callers report problems themselves, in one line)."""
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def weight_misfit(info: dict, kinds: tuple[str, ...] = ("missing", "unexpected", "mismatched"), shown: int = 3) -> str:
    """transformers' loading info -> ``""`` when the weights fit, else one line naming the first ``shown`` keys of
    each of ``kinds`` (missing, unexpected, mismatched), with counts."""
    parts = []
    for kind in kinds:
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(f"{kind}_keys") or ())
        if keys:
            more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
            parts.append(f"{len(keys)} {kind}: {', '.join(keys[:shown])}{more}")
    return "; ".join(parts)


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows of ``[N, D]`` scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, eps)).astype(np.float32, copy=False)


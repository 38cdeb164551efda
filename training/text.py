"""Frozen text encoders for cross-attention: a registry ``kind -> loader``, chosen by a spec ``KIND:DIR``.

- ``hf:DIR``: any transformers text encoder directory with its tokenizer (BERT, MiniLM, RoBERTa, T5/mT5 encoders; of an
  encoder-decoder checkpoint, its encoder). sentence-transformers' all-MiniLM-L6-v2 (384-d, 22 M parameters), which
  ``n2m models fetch`` installs, is the embedded default's text encoder: ``hf:all-MiniLM-L6-v2``.
- ``t5:DIR``: the same loader, kept as a name for T5 directories (Noise2Music conditions on T5 token states,
  arXiv 2302.03917 section 3.1; the paper does not name the T5 size).
- ``clap:DIR``: the token states of a CLAP model's text tower (:meth:`n2m.clap.ClapEmbedder.text_token_states`), for
  set-ups with no other text model (e.g. a model made by ``n2m clap-train``).

Every encoder maps captions to ``(states [B, L, D] float32, mask [B, L] bool)`` with ``L`` = the token length (padded
or truncated); an empty caption has an all-False mask (the network treats it as unconditional). The cross-attention
layers read the states and the U-Net's pooled path their masked mean (after its own per-token projection);
:meth:`TextEncoder.pooled` gives the masked mean of the states themselves, which for MiniLM is the sentence embedding
it was trained to give (mean pooling, Reimers & Gurevych 2019, arXiv 1908.10084). Weights never train and are not
part of n2m checkpoints: the spec and the directory's content hash are recorded instead.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from n2m.errors import UserError


def parse_spec(spec: str) -> tuple[str, str]:
    """``"KIND:DIR"`` -> ``(kind, dir)`` with a one-line error for anything else. ``DIR`` may also name a model that
    ``n2m models fetch`` installs (``hf:all-MiniLM-L6-v2``): its folder is returned."""
    from n2m.models import known_models, model_dir

    kind, sep, path = spec.partition(":")
    if not sep or kind not in TEXT_ENCODERS or not path:
        raise UserError(f"--text-encoder must be KIND:DIR with KIND one of {sorted(TEXT_ENCODERS)}, got {spec!r}")
    if not Path(path).is_dir() and path in known_models():
        path = str(model_dir(path))
    if not (Path(path) / "config.json").is_file():
        raise UserError(f"text encoder directory {path} has no config.json")
    return kind, path


class TextEncoder:
    """Base of the frozen encoders: ``encode(texts) -> (states [B, L, D], mask [B, L])`` on ``self.device``."""

    dim: int
    max_length: int
    device: torch.device

    def to(self, device: str | torch.device) -> TextEncoder:
        raise NotImplementedError

    def _states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        states, mask = self._states(list(texts))
        mask = mask.to(self.device).bool()
        empty = torch.tensor([not t.strip() for t in texts], dtype=torch.bool, device=self.device)
        mask = mask & ~empty[:, None]
        pad = self.max_length - states.shape[1]
        if pad > 0:  # an encoder whose own limit is shorter than the stage's token length
            states, mask = F.pad(states, (0, 0, 0, pad)), F.pad(mask, (0, pad))
        states = states[:, : self.max_length].float() * mask[:, : self.max_length, None]
        return states, mask[:, : self.max_length]

    @torch.no_grad()
    def pooled(self, texts: list[str]) -> torch.Tensor:
        """``[B, D]``: the masked mean of each caption's token states (zeros for an empty caption)."""
        states, mask = self.encode(texts)
        weights = mask[..., None].to(states.dtype)  # [B, L, 1]
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class HFTextEncoder(TextEncoder):
    """A frozen transformers text encoder and its tokenizer from a local directory: ``AutoModelForTextEncoding`` for
    the model types it knows (BERT, RoBERTa, T5 -> ``T5EncoderModel``, ...), else ``AutoModel`` (its encoder when the
    model is an encoder-decoder). States are the last hidden layer; sequences are truncated at the stage's token
    length or the model's own limit, whichever is shorter (:meth:`TextEncoder.encode` pads the rest)."""

    def __init__(self, path: str, max_length: int):
        from safetensors import SafetensorError
        from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer
        from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES
        from transformers.utils import logging as hf_logging

        verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # a misfit is reported below in one line, not as transformers' key table
        hf_logging.disable_progress_bar()
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            known = config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES
            loader = AutoModelForTextEncoding if known else AutoModel
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model, loading = loader.from_pretrained(path, local_files_only=True, output_loading_info=True,
                                                    ignore_mismatched_sizes=True)
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise UserError(f"cannot load text encoder from {path}: {str(err).strip().splitlines()[0]}") from err
        finally:
            hf_logging.set_verbosity(verbosity)
            if bars:
                hf_logging.enable_progress_bar()
        _check_fit(path, loading)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()
        self.model = model.eval().requires_grad_(False)
        self.dim = _width(config)
        self.max_length = max_length
        limits = [max_length, getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length]
        self.token_limit = min(int(x) for x in limits if isinstance(x, int) and x > 0)
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> HFTextEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(texts, padding="longest", truncation=True, max_length=self.token_limit,
                                return_tensors="pt")
        ids, mask = tokens["input_ids"].to(self.device), tokens["attention_mask"].to(self.device)
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state, mask


class ClapTextEncoder(TextEncoder):
    """The text tower of a CLAP directory, through :class:`n2m.clap.ClapEmbedder` (one code path for CLAP)."""

    def __init__(self, path: str, max_length: int):
        from n2m.clap import ClapEmbedder

        self.embedder = ClapEmbedder.from_pretrained(path)
        self.embedder.model.requires_grad_(False)
        self.dim = int(self.embedder.text_hidden_size)
        self.max_length = max_length
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> ClapTextEncoder:
        self.device = torch.device(device)
        self.embedder.model.to(self.device)
        self.embedder.device = self.device
        return self

    def _states(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedder.text_token_states(texts, self.max_length)


_KEYS_SHOWN = 3  # keys named per kind of misfit


def _check_fit(path: str, loading: dict) -> None:
    """Refuse weights that do not fit the config: transformers would initialise missing or misshapen tensors at random
    and drop unexpected ones, and an encoder like that conditions training on noise. ``loading`` is
    ``from_pretrained(..., output_loading_info=True)``'s report (``mismatched_keys`` holds ``(key, file shape, model
    shape)``); the error names the first few keys of each kind."""
    kinds = {
        "missing": sorted(loading.get("missing_keys") or ()),
        "unexpected": sorted(loading.get("unexpected_keys") or ()),
        "misshapen": [f"{key} file {list(got)} vs model {list(want)}"
                      for key, got, want in sorted(loading.get("mismatched_keys") or (), key=lambda m: m[0])],
    }
    problems = [f"{len(keys)} {kind} ({', '.join(keys[:_KEYS_SHOWN])}{', ...' if len(keys) > _KEYS_SHOWN else ''})"
                for kind, keys in kinds.items() if keys]
    if problems:
        raise UserError(f"text encoder weights in {path} do not fit its config.json: {'; '.join(problems)} "
                        "(a damaged or edited weights file, or a config of another model)")


def _width(config) -> int:
    """Token-state width of a transformers config (``hidden_size``; T5 configs map it to ``d_model``)."""
    return int(config.hidden_size)


def _hf_width(path: str) -> int:
    from transformers import AutoConfig

    try:
        return _width(AutoConfig.from_pretrained(path, local_files_only=True))
    except (OSError, ValueError, KeyError, AttributeError) as err:
        raise UserError(f"cannot read the text encoder config in {path}: {str(err).strip().splitlines()[0]}") from err


def _clap_width(path: str) -> int:
    from n2m.clap import text_width_of  # CLAP and joint-model directories alike

    return text_width_of(path)


@dataclass(frozen=True)
class EncoderKind:
    load: Callable[[str, int], TextEncoder]
    width: Callable[[str], int]  # token-state width from the config alone (for --dry-run, no weights loaded)


TEXT_ENCODERS: dict[str, EncoderKind] = {
    "hf": EncoderKind(load=HFTextEncoder, width=_hf_width),
    "t5": EncoderKind(load=HFTextEncoder, width=_hf_width),
    "clap": EncoderKind(load=ClapTextEncoder, width=_clap_width),
}


def text_width(spec: str) -> int:
    """Width ``D`` of the token states of the encoder ``spec`` (reads only its config)."""
    kind, path = parse_spec(spec)
    return TEXT_ENCODERS[kind].width(path)


class CachedTextEncoder(TextEncoder):
    """An LRU of encoded captions (CPU, trimmed to their tokens) in front of an encoder: ``max_items`` entries."""

    def __init__(self, inner: TextEncoder, max_items: int):
        self.inner = inner
        self.dim, self.max_length, self.device = inner.dim, inner.max_length, inner.device
        self.max_items = max_items
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def to(self, device: str | torch.device) -> CachedTextEncoder:
        self.inner.to(device)
        self.device = self.inner.device
        return self

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            states, mask = self.inner.encode(missing)
            for text, s, m in zip(missing, states.cpu(), mask.cpu()):
                self._cache[text] = s[m]  # [n_tokens, D]
        out = torch.zeros(len(texts), self.max_length, self.dim)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.bool)
        for i, text in enumerate(texts):
            tokens = self._cache[text]
            self._cache.move_to_end(text)
            out[i, : tokens.shape[0]], mask[i, : tokens.shape[0]] = tokens, True
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return out.to(self.device), mask.to(self.device)


def load_text_encoder(spec: str, max_length: int, cache_items: int = 0) -> TextEncoder:
    """Load the encoder of ``spec`` (``hf:DIR`` | ``t5:DIR`` | ``clap:DIR``) on CPU; ``cache_items > 0`` adds an LRU
    cache."""
    kind, path = parse_spec(spec)
    encoder = TEXT_ENCODERS[kind].load(path, max_length)
    return CachedTextEncoder(encoder, cache_items) if cache_items > 0 else encoder

"""n2m's joint audio-text model on pretrained towers, a drop-in for a CLAP directory (:class:`n2m.clap.ClapEmbedder`).

The recipe is LiT's (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning", arXiv 2111.07991):
start from towers that already know their modality, lock them (or tune only the text tower's top layers), and train
what joins them contrastively: a projection head per tower and CLAP's temperatures (symmetric InfoNCE, as
``n2m clap-train`` trains a CLAP from scratch). The audio tower is a musicnn tagger (:mod:`n2m.musicnn`, Pons & Serra
2019), the text tower any transformers text encoder (sentence-transformers' all-MiniLM-L6-v2 by default).

Audio (one clip ``[C, T]`` or ``[T]`` -> one ``[D]`` vector), with the window rule of :mod:`n2m.clap` at 16 kHz:
  1. mono, resampled to 16 kHz, cut into 10 s windows (tail >= 5 s kept, repeat-padded): ``[W]`` with W = 160,000;
  2. each window -> musicnn log-mel patches ``[P, 187, 96]`` (P = 3 for 10 s: 3 s patches, no overlap, the rest of
     the window dropped, as musicnn's extractor does) -> the chosen layers per patch, concatenated ``[P, F]``
     (:meth:`n2m.musicnn.Musicnn.reduce`) -> mean over the patches ``[F]``;
  3. the audio head: standardised with the training windows' mean and standard deviation, then
     ``Linear(F, hidden) -> GELU -> Linear(hidden, D)`` (or one ``Linear``): the window's raw embedding ``[D]``;
     the clip's embedding is the L2-normalised mean of its windows' raw embeddings (:mod:`n2m.clap`, rule 3).

Text: tokenised (truncated at the tower's limit), the tower's last hidden states ``[B, L, H]``, their masked mean
``[B, H]`` (mean pooling, the sentence embedding of sentence-transformers, Reimers & Gurevych 2019, arXiv 1908.10084),
the text head (as the audio head, standardised with the training texts' statistics) ``[B, D]``, L2-normalised.
:meth:`TowerEmbedder.text_token_states` gives the tower's hidden states, for ``--text-encoder clap:DIR``.

The towers always run in inference mode (batch norm on its moving statistics, no dropout), also while the heads train.

Directory (``model_type`` :data:`MODEL_TYPE` in ``config.json`` is how :meth:`n2m.clap.ClapEmbedder.from_pretrained`
tells it from a transformers CLAP)::

    config.json        embedding size, window rule, heads' shape, each tower's name, source content hash
                       (:func:`n2m.provenance.dir_hash`), layers and tuned layers, and the training lineage
    audio/             the musicnn model folder, copied as installed (``n2m models fetch``)
    text/              the text encoder folder: copied as given, or re-saved when its top layers were tuned
    heads.safetensors  ``audio_head.*``, ``text_head.*`` (statistics and weights), ``logit_scale_a``, ``logit_scale_t``
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from n2m.clap import DEFAULT_TEXT_CACHE, ClapEmbedder, l2_normalise, quiet_transformers, weight_misfit
from n2m.errors import UserError
from n2m.musicnn import Musicnn
from n2m.provenance import dir_hash
from n2m.storage import read_json, write_json

MODEL_TYPE = "n2m_towers"
FORMAT = 1
WINDOW_S = 10.0
INITIAL_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature (Radford et al. 2021, arXiv 2103.00020)
HEADS_FILE = "heads.safetensors"
# audio features when none are named, per musicnn architecture. musicnn: of the layer sets tried on the 40-track
# synthetic corpus (penultimate, mean_pool, max_pool, both pools, timbral+temporal, this), the best held-out label
# precision; VGG: the tag layer's input
DEFAULT_LAYERS: dict[str, tuple[str, ...]] = {"musicnn": ("timbral", "temporal", "max_pool"), "vgg": ("pool5",)}


class Head(nn.Module):
    """A tower's projection ``[B, F]`` -> ``[B, D]``.

    ``layers`` 0: the identity (``F == D``; the tower's space is the joint space, LiT's locked tower); 1: standardise
    with fixed statistics (:meth:`set_statistics`), dropout, ``Linear(F, D)``; 2: the same with
    ``Linear(F, hidden) -> GELU -> Linear(hidden, D)``.
    """

    def __init__(self, width: int, dim: int, hidden: int, layers: int, dropout: float = 0.0):
        super().__init__()
        if layers not in (0, 1, 2):
            raise UserError(f"a projection head has 0, 1 or 2 layers, got {layers}")
        if layers == 0 and width != dim:
            raise UserError(f"an identity head keeps its tower's width {width}; the joint size would be {dim}")
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("std", torch.ones(width))
        self.dropout = nn.Dropout(dropout)
        self.layers = layers
        if layers == 2:
            self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        else:
            self.net = nn.Linear(width, dim) if layers == 1 else nn.Identity()

    @torch.no_grad()
    def set_statistics(self, x: torch.Tensor, eps: float = 1e-5) -> None:
        """Standardise with the mean and standard deviation of ``x`` ``[N, F]`` (floored at ``eps``); an identity
        head ignores them."""
        self.mean.copy_(x.mean(dim=0))
        self.std.copy_(x.std(dim=0, unbiased=False).clamp(min=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layers == 0:
            return x
        return self.net(self.dropout((x - self.mean) / self.std))


class TowerModel(nn.Module):
    """The towers, the heads and CLAP's two temperatures (``logit_scale_a``, ``logit_scale_t``, log scale)."""

    def __init__(self, audio_tower: nn.Module, text_tower: nn.Module, config: dict):
        super().__init__()
        heads, dim = config["heads"], config["embed_dim"]
        self.audio_tower = audio_tower.requires_grad_(False)
        self.text_tower = text_tower.requires_grad_(False)
        self.audio_head = Head(config["audio"]["width"], dim, heads["hidden"], heads["audio_layers"], heads["dropout"])
        self.text_head = Head(config["text"]["width"], dim, heads["hidden"], heads["text_layers"], heads["dropout"])
        self.logit_scale_a = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))
        self.logit_scale_t = nn.Parameter(torch.tensor(INITIAL_LOGIT_SCALE))

    def train(self, mode: bool = True) -> TowerModel:
        """Heads follow ``mode``; the towers stay in inference mode (module docstring)."""
        super().train(mode)
        self.audio_tower.eval()
        self.text_tower.eval()
        return self

    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the towers: the contents of ``heads.safetensors``."""
        return {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()
                if not k.startswith(("audio_tower.", "text_tower."))}


def load_text_tower(path: str | Path):
    """A transformers text encoder and its tokenizer from a local folder: ``AutoModelForTextEncoding`` for the model
    types it knows (BERT, RoBERTa, T5 -> ``T5EncoderModel``, ...), else ``AutoModel`` (its encoder when the model is
    an encoder-decoder). Returns ``(model, tokenizer)``. A folder that does not load, or whose weights leave tower
    parameters missing or misshapen, is a one-line UserError (extra checkpoint tensors, such as a decoder or a
    language-model head, are fine)."""
    from transformers import AutoConfig, AutoModel, AutoModelForTextEncoding, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(str(path), local_files_only=True)
            known = config.model_type in MODEL_FOR_TEXT_ENCODING_MAPPING_NAMES
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model, info = (AutoModelForTextEncoding if known else AutoModel).from_pretrained(
                str(path), local_files_only=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"cannot load text encoder from {path}: {first}") from err
    misfit = weight_misfit(info, ("missing", "mismatched"))
    if misfit:
        raise UserError(f"text encoder {path}: its weights do not fit its config.json ({misfit})")
    if getattr(model.config, "is_encoder_decoder", False):
        model = model.get_encoder()
    return model.eval(), tokenizer


def tuned_blocks(text_tower: nn.Module, count: int) -> list[nn.Module]:
    """The top ``count`` blocks of a text tower: the last entries of its longest ``nn.ModuleList`` (BERT's
    ``encoder.layer``, T5's ``block``). ``count`` larger than the tower is a UserError."""
    lists = [m for m in text_tower.modules() if isinstance(m, nn.ModuleList)]
    blocks = max(lists, key=len) if lists else nn.ModuleList()
    if count > len(blocks):
        raise UserError(f"the text tower has {len(blocks)} blocks; cannot tune the top {count}")
    return list(blocks)[len(blocks) - count:] if count else []


class TowerEmbedder(ClapEmbedder):
    """A :class:`n2m.clap.ClapEmbedder` whose audio is a musicnn layer and whose text a transformers encoder, joined by
    trained heads (module docstring). ``config`` is the directory's ``config.json``."""

    def __init__(self, model: TowerModel, tagger: Musicnn, tokenizer, config: dict, model_id: str, path: str,
                 device: str = "cpu", min_tail_s: float | None = None, text_cache_size: int = DEFAULT_TEXT_CACHE,
                 sources: tuple[Path, Path] | None = None):
        super().__init__(model, model_id, path, device, sample_rate=int(config["sample_rate"]),
                         window_s=float(config["window_s"]), min_tail_s=min_tail_s, text_cache_size=text_cache_size)
        self.tagger = tagger
        self.tokenizer = tokenizer
        self.config = config
        self.layers: tuple[str, ...] = tuple(config["audio"]["layers"])
        limits = [getattr(model.text_tower.config, "max_position_embeddings", None), tokenizer.model_max_length]
        self.token_limit = min(int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000)
        # the tower folders :meth:`save` copies: where they were built from, or this directory's own
        self.sources = sources or (Path(path) / "audio", Path(path) / "text")

    # -----------------------------------------------------------------------------------------------------------------
    # Building, saving, loading

    @classmethod
    def build(cls, text_dir: str | Path, audio_dir: str | Path, layers: tuple[str, ...] = (),
              embed_dim: int | None = None,
              hidden: int = 512, audio_head_layers: int = 2, text_head_layers: int = 0, dropout: float = 0.0,
              tune_text_layers: int = 0, names: tuple[str, str] | None = None, device: str = "cpu",
              seed: int = 0) -> TowerEmbedder:
        """Untrained heads on the towers in ``text_dir`` (transformers) and ``audio_dir`` (a musicnn folder).

        ``layers``: musicnn layers whose per-patch features are concatenated (default :data:`DEFAULT_LAYERS` of the
        model's architecture); ``*_head_layers``: see :class:`Head`
        (a text head of 0 layers makes the text tower's width the joint size, the default of ``embed_dim``, else
        128); ``tune_text_layers``: how many of the text tower's top blocks train (0: locked). ``names``: how the
        towers were asked for ``(audio, text)`` (recorded).
        """
        tagger = Musicnn.from_pretrained(str(audio_dir))
        layers = tuple(layers) or DEFAULT_LAYERS[tagger.config["architecture"]]
        unknown = [layer for layer in layers if layer not in tagger.layers]
        if unknown:
            raise UserError(f"musicnn model {tagger.name} has no layer {', '.join(unknown)}; "
                            f"choose from {', '.join(tagger.layers)}")
        text_tower, tokenizer = load_text_tower(text_dir)
        text_width = int(text_tower.config.hidden_size)
        if embed_dim is None:
            embed_dim = text_width if text_head_layers == 0 else 128
        probe = tagger.layer_outputs(np.zeros((1, Musicnn.PATCH_FRAMES, 96), np.float32))
        audio_name, text_name = names or (str(audio_dir), str(text_dir))
        config = {
            "model_type": MODEL_TYPE, "format": FORMAT, "embed_dim": int(embed_dim),
            "sample_rate": Musicnn.SAMPLE_RATE, "window_s": WINDOW_S,
            "audio": {"kind": "musicnn", "name": audio_name, "model": tagger.name, "sha1": dir_hash(audio_dir),
                      "layers": list(layers),
                      "width": int(sum(tagger.reduce(layer, probe[layer]).shape[-1] for layer in layers)),
                      "reduce": "per patch as n2m.musicnn, then the mean over the window's patches"},
            "text": {"kind": "hf", "name": text_name, "model_type": text_tower.config.model_type,
                     "sha1": dir_hash(text_dir), "width": text_width, "pooling": "mean",
                     "tuned_layers": int(tune_text_layers)},
            "heads": {"audio_layers": int(audio_head_layers), "text_layers": int(text_head_layers),
                      "hidden": int(hidden), "dropout": float(dropout),
                      "standardise": "training set mean and standard deviation"},
        }
        torch.manual_seed(seed)
        model = TowerModel(tagger.net, text_tower, config)
        for block in tuned_blocks(text_tower, tune_text_layers):
            block.requires_grad_(True)
        return cls(model, tagger, tokenizer, config, model_id="untrained-towers", path="", device=device,
                   sources=(Path(audio_dir), Path(text_dir)))

    def save(self, out: str | Path, lineage: dict | None = None) -> Path:
        """Write the directory (module docstring); ``lineage`` (training inputs) goes into ``config.json``."""
        from safetensors.torch import save_file

        root = Path(out)
        root.mkdir(parents=True, exist_ok=True)
        tuned = bool(self.config["text"]["tuned_layers"])
        for name, source in zip(("audio", "text"), self.sources):
            target = root / name
            if target.resolve() == Path(source).resolve():
                if name == "text" and tuned:
                    self.model.text_tower.save_pretrained(str(target))
                continue  # saving over itself: the locked folder is already there
            if target.exists():
                shutil.rmtree(target)
            if name == "text" and tuned:
                self.model.text_tower.save_pretrained(str(target))
                self.tokenizer.save_pretrained(str(target))
            else:
                shutil.copytree(source, target)
        save_file(self.model.head_state(), str(root / HEADS_FILE))
        write_json(str(root / "config.json"), dict(self.config, lineage=lineage or {}))
        return root

    @classmethod
    def load(cls, root: Path, device: str = "cpu", **kwargs) -> TowerEmbedder:
        """Read a directory written by :meth:`save`; heads that do not fit the config are a one-line UserError."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            config = read_json(str(root / "config.json"))
            if config.get("format") != FORMAT:
                raise ValueError(f"format {config.get('format')!r}, this n2m reads {FORMAT}")
            tagger = Musicnn.from_pretrained(str(root / "audio"))
            text_tower, tokenizer = load_text_tower(root / "text")
            model = TowerModel(tagger.net, text_tower, config)
            state = load_file(str(root / HEADS_FILE))
        except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
            raise UserError(f"cannot load joint model from {root}: {err}") from err
        expected = model.head_state()
        misfit = weight_misfit({"missing_keys": set(expected) - set(state), "unexpected_keys": set(state) - set(expected),
                                "mismatched_keys": [k for k in set(state) & set(expected)
                                                    if state[k].shape != expected[k].shape]})
        if misfit:
            raise UserError(f"joint model {root}: {HEADS_FILE} does not fit its config.json ({misfit})")
        model.load_state_dict(state, strict=False)
        return cls(model, tagger, tokenizer, config, dir_hash(root), str(root), device=device, **kwargs)

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def text_hidden_size(self) -> int:
        return int(self.config["text"]["width"])

    # -----------------------------------------------------------------------------------------------------------------
    # Audio

    def patches(self, windows: list[np.ndarray]) -> torch.Tensor:
        """``[W]`` windows at 16 kHz -> musicnn log-mel patches ``[B, P, 187, 96]`` on the model's device."""
        stacked = np.stack([self.tagger.patches(w) for w in windows])
        return torch.as_tensor(stacked, dtype=torch.float32, device=self.device)

    def tower_audio(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches ``[B, P, 187, 96]`` -> the chosen layers, concatenated and averaged over patches ``[B, F]``."""
        b, p = patches.shape[:2]
        out = self.model.audio_tower(patches.flatten(0, 1))
        per_patch = torch.cat([Musicnn.reduce(layer, out[layer]) for layer in self.layers], dim=-1)  # [B * P, F]
        return per_patch.reshape(b, p, -1).mean(dim=1)

    @torch.no_grad()
    def raw_windows(self, windows: list[np.ndarray]) -> torch.Tensor:
        return self.model.audio_head(self.tower_audio(self.patches(windows)))

    # -----------------------------------------------------------------------------------------------------------------
    # Text

    def tokens(self, texts: list[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Token ids and attention mask ``[B, L]``: padded to the longest (or exactly ``max_length``), truncated at
        the tower's limit."""
        padding = "max_length" if max_length else "longest"
        limit = min(int(max_length), self.token_limit) if max_length else self.token_limit
        tokens = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=limit, return_tensors="pt")
        return {k: tokens[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def tower_text(self, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
        """Tokens -> the masked mean of the tower's last hidden states ``[B, H]``."""
        states = self.model.text_tower(**tokens).last_hidden_state  # [B, L, H]
        weights = tokens["attention_mask"][..., None].to(states.dtype)  # [B, L, 1]
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    @torch.no_grad()
    def _embed_text_uncached(self, texts: list[str]) -> np.ndarray:
        return l2_normalise(self.model.text_head(self.tower_text(self.tokens(texts))).float().cpu().numpy())

    @torch.no_grad()
    def text_token_states(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokens(texts, max_length)
        return self.model.text_tower(**tokens).last_hidden_state, tokens["attention_mask"]


def load(root: Path, device: str = "cpu", **kwargs) -> TowerEmbedder:
    """The loader :data:`n2m.clap.MODEL_TYPES` names for :data:`MODEL_TYPE` directories."""
    return TowerEmbedder.load(root, device, **kwargs)


def text_width(config: dict) -> int:
    """``H`` of :meth:`TowerEmbedder.text_token_states` from a directory's ``config.json``."""
    return int(config["text"]["width"])

"""``n2m clap convert``: an original LAION CLAP ``.pt`` checkpoint -> a transformers ``ClapModel`` directory.

LAION CLAP (Wu et al. 2023, arXiv 2211.06687; github.com/LAION-AI/CLAP) stores one ``state_dict`` with an HTSAT audio
branch (``audio_branch.*``, Chen et al. 2022, arXiv 2202.00874), a RoBERTa text branch (``text_branch.*``), two
projection MLPs and two learned temperatures. Every key is either renamed by :data:`RULES` (the ``qkv`` matrices of the
Swin blocks split into query/key/value) or listed in :data:`DROPPED` with the reason it has no transformers counterpart;
anything else stops the conversion, and so does any transformers weight left unfilled. The checkpoint is read with
``torch.load(weights_only=True)``. The text branch's configuration and tokenizer come from ``--text-model`` (a local
``roberta-base`` directory: LAION's text branch is RoBERTa), the audio shapes are read off the checkpoint itself.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from n2m.errors import UserError
from n2m.provenance import file_hash, now_iso, versions
from n2m.storage import write_json

log = logging.getLogger(__name__)

_A = "audio_model.audio_encoder."
_BLOCK = r"audio_branch\.layers\.(\d+)\.blocks\.(\d+)\."
_HF_BLOCK = _A + r"layers.\1.blocks.\2."

# (LAION key regex, transformers key template); first match wins. ``qkv`` is handled by _split_qkv.
RULES: tuple[tuple[str, str], ...] = (
    (r"logit_scale_(a|t)", r"logit_scale_\1"),
    (r"(text|audio)_projection\.0\.(weight|bias)", r"\1_projection.linear1.\2"),
    (r"(text|audio)_projection\.2\.(weight|bias)", r"\1_projection.linear2.\2"),
    (r"text_branch\.(embeddings\.(?:word|position|token_type)_embeddings\.weight)", r"text_model.\1"),
    (r"text_branch\.(embeddings\.LayerNorm\.(?:weight|bias))", r"text_model.\1"),
    (r"text_branch\.(encoder\.layer\.\d+\..+\.(?:weight|bias))", r"text_model.\1"),
    (r"text_branch\.(pooler\.dense\.(?:weight|bias))", r"text_model.\1"),
    (r"audio_branch\.bn0\.(.+)", _A + r"batch_norm.\1"),
    (r"audio_branch\.patch_embed\.(.+)", _A + r"patch_embed.\1"),
    (_BLOCK + r"norm1\.(weight|bias)", _HF_BLOCK + r"layernorm_before.\3"),
    (_BLOCK + r"norm2\.(weight|bias)", _HF_BLOCK + r"layernorm_after.\3"),
    (_BLOCK + r"attn\.(relative_position_bias_table|relative_position_index)", _HF_BLOCK + r"attention.self.\3"),
    (_BLOCK + r"attn\.proj\.(weight|bias)", _HF_BLOCK + r"attention.output.dense.\3"),
    (_BLOCK + r"mlp\.fc1\.(weight|bias)", _HF_BLOCK + r"intermediate.dense.\3"),
    (_BLOCK + r"mlp\.fc2\.(weight|bias)", _HF_BLOCK + r"output.dense.\3"),
    (r"audio_branch\.layers\.(\d+)\.downsample\.(reduction|norm)\.(.+)", _A + r"layers.\1.downsample.\2.\3"),
    (r"audio_branch\.norm\.(weight|bias)", _A + r"norm.\1"),
)
_QKV = re.compile(_BLOCK + r"attn\.qkv\.(weight|bias)")

# LAION keys with no transformers counterpart, and why.
DROPPED: tuple[tuple[str, str], ...] = (
    (r"audio_branch\.spectrogram_extractor\..+", "STFT kernels: ClapFeatureExtractor computes the spectrogram"),
    (r"audio_branch\.logmel_extractor\..+", "mel filters: ClapFeatureExtractor holds the (Slaney) filter bank"),
    (_BLOCK + r"attn_mask", "shifted-window mask: transformers rebuilds it from the shapes"),
    (r"audio_branch\.(tscam_conv|head)\..+", "AudioSet classification head: not part of the CLAP embedding"),
    (r"text_branch\.embeddings\.(position_ids|token_type_ids)", "index buffers: rebuilt from the config"),
    (r"(audio|text)_transform\..+", "training-loss MLPs: unused by CLAP embeddings"),
)

# transformers keys not filled from the checkpoint: deterministic buffers built from the config.
HF_BUILT: tuple[str, ...] = (r"text_model\.embeddings\.(position_ids|token_type_ids)",)

# LAION's HTSAT audio front end (laion_clap model configs: 48 kHz, n_fft 1024, hop 480, 64 mels, 50 Hz-14 kHz).
LAION_FEATURES = dict(sampling_rate=48_000, fft_window_size=1024, hop_length=480, max_length_s=10,
                      frequency_min=50, frequency_max=14_000)


def _rename(key: str) -> str | None:
    for pattern, template in RULES:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(template)
    return None


def _split_qkv(key: str, value: torch.Tensor) -> dict[str, torch.Tensor] | None:
    match = _QKV.fullmatch(key)
    if not match:
        return None
    layer, block, kind = match.groups()
    prefix = f"{_A}layers.{layer}.blocks.{block}.attention.self."
    query, key_, value_ = value.chunk(3, dim=0)  # LAION's nn.Linear(dim, 3 * dim): rows are [q; k; v]
    return {f"{prefix}query.{kind}": query, f"{prefix}key.{kind}": key_, f"{prefix}value.{kind}": value_}


def _matches(key: str, patterns) -> str | None:
    for item in patterns:
        pattern, reason = item if isinstance(item, tuple) else (item, "")
        if re.fullmatch(pattern, key):
            return reason or pattern
    return None


def rename_state_dict(laion: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """LAION ``state_dict`` -> ``(transformers state_dict, {dropped LAION key: reason})``.

    Raises :class:`UserError` naming every key that is neither renamed nor knowingly dropped.
    """
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unknown: list[str] = []
    for raw_key, value in laion.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        split = _split_qkv(key, value)
        if split is not None:
            out.update(split)
            continue
        target = _rename(key)
        if target is not None:
            out[target] = value
            continue
        reason = _matches(key, DROPPED)
        if reason is not None:
            dropped[key] = reason
            continue
        unknown.append(key)
    if unknown:
        shown = ", ".join(sorted(unknown)[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
        raise UserError(f"{len(unknown)} checkpoint keys have no mapping (not a LAION HTSAT CLAP?): {shown}")
    return out, dropped


# ---------------------------------------------------------------------------------------------------------------------
# Configuration read off the checkpoint


def _count(keys, pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.fullmatch(pattern, k))}
    return max(found) + 1 if found else 0


def audio_config_from(state: dict[str, torch.Tensor]) -> dict:
    """HTSAT shapes (transformers ``ClapAudioConfig`` fields) from a renamed state dict."""
    keys = list(state)
    try:
        proj = state[_A + "patch_embed.proj.weight"]  # [E, C_in, P, P]
        n_layers = _count(keys, re.escape(_A) + r"layers\.(\d+)\..+")
        depths = [_count(keys, re.escape(_A) + rf"layers\.{i}\.blocks\.(\d+)\..+") for i in range(n_layers)]
        tables = [state[f"{_A}layers.{i}.blocks.0.attention.self.relative_position_bias_table"] for i in range(n_layers)]
        fc1 = state[f"{_A}layers.0.blocks.0.intermediate.dense.weight"]
        mel_bins = state[_A + "batch_norm.weight"].shape[0]
    except KeyError as err:
        raise UserError(f"checkpoint lacks the HTSAT weight {err.args[0]}") from err
    window = (int(round(tables[0].shape[0] ** 0.5)) + 1) // 2  # table rows = (2w - 1)^2
    fusion = any(".fusion_model." in k or ".mel_conv2d." in k for k in keys)
    config = dict(
        patch_embeds_hidden_size=int(proj.shape[0]),
        patch_size=int(proj.shape[-1]),
        depths=depths,
        num_attention_heads=[int(t.shape[1]) for t in tables],
        window_size=window,
        hidden_size=int(proj.shape[0]) * 2 ** (n_layers - 1),
        mlp_ratio=float(fc1.shape[0]) / float(proj.shape[0]),
        num_mel_bins=int(mel_bins),
        enable_fusion=fusion,
    )
    if fusion:
        config["fusion_type"] = "aff_2d"
    return config


def text_config_from(text_dir: str) -> dict:
    """RoBERTa fields of ``text_dir/config.json`` as ``ClapTextConfig`` fields."""
    from transformers import AutoConfig

    try:
        roberta = AutoConfig.from_pretrained(text_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"--text-model {text_dir}: not a transformers model directory ({err})") from err
    fields = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
              "bos_token_id", "eos_token_id")
    return {f: getattr(roberta, f) for f in fields if getattr(roberta, f, None) is not None}


# ---------------------------------------------------------------------------------------------------------------------
# Settings the checkpoint cannot use


def check_features(features: dict) -> dict:
    """``features`` (``ClapFeatureExtractor`` fields) if ``0 <= frequency_min < frequency_max <= sampling_rate / 2``
    (a mel filter above the Nyquist frequency has no FFT bin to read and stays all zero); else a one-line
    :class:`UserError` naming the flags."""
    low, high, rate = features["frequency_min"], features["frequency_max"], features["sampling_rate"]
    if low >= high:
        raise UserError(f"--fmin {low:g} Hz must be below --fmax {high:g} Hz")
    if high > rate / 2:
        raise UserError(f"--fmax {high:g} Hz is above the Nyquist frequency of --sample-rate {rate} ({rate / 2:g} Hz)")
    return features


def check_audio_input(model, extractor, spec_size: int) -> None:
    """One window of silence through the audio tower of ``model``: its HTSAT takes a spectrogram of at most
    ``spec_size * (spec_size // mel_bins)`` frames (transformers ``ClapAudioEncoder.reshape_mel2img``), which the
    window length, ``--sample-rate`` and LAION's hop decide, and ``spec_size`` must suit the patch grid. A setting
    it cannot take fails here in one line, not at the first ``n2m label``."""
    import numpy as np

    rate, seconds = extractor.sampling_rate, extractor.max_length_s
    inputs = extractor(np.zeros(int(rate * seconds), np.float32), sampling_rate=rate, return_tensors="pt")
    frames, bins = inputs["input_features"].shape[-2:]  # [B, C, T, F]
    try:
        with torch.no_grad():
            model.get_audio_features(**inputs)
    except (ValueError, RuntimeError, ZeroDivisionError) as err:
        why = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserError(f"a {seconds:g} s window at --sample-rate {rate} is a {frames} x {bins} spectrogram, which the "
                        f"audio tower of --spec-size {spec_size} cannot take ({why}; LAION models use --sample-rate "
                        "48000 and --spec-size 256)") from err


# ---------------------------------------------------------------------------------------------------------------------
# The conversion


def load_laion_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a LAION ``.pt`` (``{"state_dict": ...}`` or a bare state dict), never unpickling code."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        raise UserError(f"cannot read {path} as a weights-only torch checkpoint: {str(err).splitlines()[0]}") from err
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict of tensors")
    return state


def convert(checkpoint: str, text_model: str, out: str, features: dict | None = None, spec_size: int = 256,
            progress: Callable[[str], None] = log.info) -> dict:
    """Convert and save; returns the conversion record (also written to ``out/conversion.json``).

    ``features`` overrides :data:`LAION_FEATURES`; ``spec_size`` (HTSAT's square input, 256 in every LAION model) is
    the one audio shape the weights do not reveal. Settings the model cannot use fail before anything is written:
    a mel band beyond the Nyquist frequency (:func:`check_features`), or a spectrogram the audio tower cannot take
    (:func:`check_audio_input`).
    """
    from transformers import AutoTokenizer, ClapConfig, ClapFeatureExtractor, ClapModel

    features = check_features({**LAION_FEATURES, **(features or {})})
    state, dropped = rename_state_dict(load_laion_state_dict(checkpoint))
    audio = dict(audio_config_from(state), spec_size=int(spec_size))
    text = text_config_from(text_model)
    projection = state.get("audio_projection.linear1.weight")
    if projection is None:
        raise UserError("checkpoint lacks audio_projection.0.weight")
    config = ClapConfig(text_config=text, audio_config=audio, projection_dim=int(projection.shape[0]))
    model = ClapModel(config).eval()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _matches(k, HF_BUILT)]
    extra = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    for problem, items in (("unfilled transformers weights", missing), ("keys transformers has no place for", extra),
                           ("shape mismatches", wrong)):
        if items:
            raise UserError(f"{len(items)} {problem}: {', '.join(sorted(items)[:6])}")
    filled = {k: state.get(k, v) for k, v in expected.items()}
    model.load_state_dict(filled, strict=True)
    progress(f"mapped {len(state)} tensors, dropped {len(dropped)} with known reasons")
    try:
        tokenizer = AutoTokenizer.from_pretrained(text_model, local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserError(f"--text-model {text_model}: no tokenizer ({err})") from err
    fusion = bool(audio["enable_fusion"])
    extractor = ClapFeatureExtractor(feature_size=audio["num_mel_bins"], truncation="fusion" if fusion else "rand_trunc",
                                     padding="repeatpad", **features)
    check_audio_input(model, extractor, audio["spec_size"])
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root))
    extractor.save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    record = {
        "source": {"checkpoint": str(Path(checkpoint).resolve()), "sha1": file_hash(checkpoint),
                   "text_model": str(Path(text_model).resolve())},
        "tensors_mapped": len(state),
        "dropped": dropped,
        "audio_config": audio,
        "created": now_iso(),
        "versions": versions(),
    }
    write_json(str(root / "conversion.json"), record)
    return record


# ---------------------------------------------------------------------------------------------------------------------
# The job (``n2m clap convert``; the command line: n2m.labeling.clap_cli)


@dataclass(frozen=True, kw_only=True)
class ConvertSettings:
    """What ``n2m clap convert`` does: ``checkpoint`` (the LAION ``.pt``), ``text_model`` (a roberta-base folder),
    ``out`` (the transformers ClapModel folder), the audio front end the checkpoint was trained with (``sample_rate``,
    ``fmin``, ``fmax`` in Hz; ``spec_size``, HTSAT's input size) and ``overwrite`` (replace a non-empty ``out``)."""

    checkpoint: str
    text_model: str
    out: str
    sample_rate: int = LAION_FEATURES["sampling_rate"]
    fmin: float = LAION_FEATURES["frequency_min"]
    fmax: float = LAION_FEATURES["frequency_max"]
    spec_size: int = 256
    overwrite: bool = False


def run_convert(settings: ConvertSettings) -> int:
    """Convert, then load the result as every consumer will (a check before anyone relies on it); print a summary."""
    out = Path(settings.out)
    if out.exists() and any(out.iterdir()) and not settings.overwrite:
        raise UserError(f"{out} is not empty (use --overwrite to replace it)")
    features = {"sampling_rate": settings.sample_rate, "frequency_min": settings.fmin, "frequency_max": settings.fmax}
    record = convert(settings.checkpoint, settings.text_model, str(out), features, settings.spec_size, progress=print)
    from n2m.clap import ClapEmbedder

    embedder = ClapEmbedder.from_pretrained(str(out))
    print(f"n2m clap convert: wrote {out} ({record['tensors_mapped']} tensors, {len(record['dropped'])} dropped "
          f"by rule; embedding dim {embedder.embed_dim}, model id {embedder.model_id[:12]})")
    return 0

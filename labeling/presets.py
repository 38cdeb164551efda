"""Small CLAP model presets (registry name -> shapes) and the caption tokenizer, saved in the transformers layout.

Every preset produces the same kind of directory as a real LAION model (``ClapModel`` weights + ``config.json``, a
``ClapFeatureExtractor`` ``preprocessor_config.json`` and a fast tokenizer), so :class:`n2m.clap.ClapEmbedder` loads
them through the production path. ``micro`` is for unit tests (seconds on a CPU); ``tiny`` is ``n2m clap-train``'s
default, small enough to train contrastively in a few CPU minutes on a synthetic corpus.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # RoBERTa order: pad id 1 = ClapTextConfig.pad_token_id


@dataclass(frozen=True)
class ClapPreset:
    """Shapes of a small CLAP: feature extractor, HTSAT audio tower, RoBERTa-style text tower, projection."""

    features: dict[str, Any]
    audio: dict[str, Any]
    text: dict[str, Any]
    projection_dim: int
    vocab_size: int
    max_text_length: int = 32


# spec_size * (spec_size // num_mel_bins) must cover the window's frames: 10 s at hop 320 / 16 kHz = 501 <= 512.
PRESETS: dict[str, ClapPreset] = {
    "micro": ClapPreset(
        features=dict(feature_size=32, sampling_rate=16_000, hop_length=320, fft_window_size=512, max_length_s=10,
                      frequency_min=50, frequency_max=8_000),
        audio=dict(num_mel_bins=32, spec_size=128, patch_size=4, patch_stride=4, window_size=4, depths=[1, 1, 1],
                   num_attention_heads=[1, 2, 4], patch_embeds_hidden_size=8, hidden_size=32),
        text=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        projection_dim=16,
        vocab_size=300,
    ),
    "tiny": ClapPreset(
        features=dict(feature_size=32, sampling_rate=16_000, hop_length=320, fft_window_size=512, max_length_s=10,
                      frequency_min=50, frequency_max=8_000),
        audio=dict(num_mel_bins=32, spec_size=128, patch_size=4, patch_stride=4, window_size=8, depths=[1, 1, 2],
                   num_attention_heads=[2, 4, 8], patch_embeds_hidden_size=32, hidden_size=128),
        text=dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
        projection_dim=128,
        vocab_size=1_000,
    ),
}


def get_preset(name: str) -> ClapPreset:
    from n2m.errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown CLAP preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int):
    """A byte-level BPE tokenizer (RoBERTa's kind) trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    Encodes ``<s> text </s>``; pad id 1 so RoBERTa position ids (offset by the padding index) stay valid.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tokenizer.token_to_id("<s>")), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        mask_token="<mask>", model_max_length=max_length,
    )


def build_clap(preset: ClapPreset | str, texts: Iterable[str], seed: int = 0):
    """A randomly initialised ``(ClapModel, ClapFeatureExtractor, tokenizer)`` of a preset; tokenizer trained on
    ``texts``."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    spec = get_preset(preset) if isinstance(preset, str) else preset
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.max_text_length)
    text = dict(spec.text, vocab_size=len(tokenizer), max_position_embeddings=spec.max_text_length + 2,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = ClapConfig(text_config=text, audio_config=dict(spec.audio), projection_dim=spec.projection_dim)
    torch.manual_seed(seed)
    model = ClapModel(config)
    features = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad", **spec.features)
    return model, features, tokenizer


def save_clap(out: str | Path, model, feature_extractor, tokenizer) -> Path:
    """Write a CLAP directory in the transformers layout (safetensors weights)."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(root))
    feature_extractor.save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    return root

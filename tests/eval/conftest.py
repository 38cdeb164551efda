"""Fixtures for the eval tests: random torchvggish weights, a tiny random CLAP directory, small audio sets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eval_helpers import tone

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS = {
    "calm": "a calm piano piece",
    "techno": "fast techno with drums",
    "violin": "a sad violin melody",
    "guitar": "happy guitar pop song",
    "pad": "ambient synth pad",
    "sax": "upbeat jazz with saxophone",
}


@pytest.fixture(scope="session")
def vggish_weights(tmp_path_factory) -> str:
    """A torchvggish-layout state dict with random weights and PCA parameters."""
    import torch

    from n2m.eval.vggish import random_state_dict

    state = random_state_dict(0)
    path = tmp_path_factory.mktemp("vggish") / "vggish-random.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture(scope="session")
def clap_dir(tmp_path_factory) -> str:
    """A tiny random transformers ClapModel directory (16 kHz, 10 s windows), loadable by n2m.clap.ClapEmbedder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    words = sorted({w for text in PROMPTS.values() for w in text.split()})
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=16)
    text = dict(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=32, max_position_embeddings=18, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio = dict(num_mel_bins=32, spec_size=128, patch_size=4, patch_stride=4, window_size=4, depths=[1, 1],
                 num_attention_heads=[1, 2], patch_embeds_hidden_size=8, hidden_size=16)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
    features = ClapFeatureExtractor(feature_size=32, sampling_rate=16000, hop_length=320, fft_window_size=512,
                                    max_length_s=10, frequency_min=50, frequency_max=8000, truncation="rand_trunc",
                                    padding="repeatpad")
    root = tmp_path_factory.mktemp("clap")
    model.save_pretrained(str(root))
    features.save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    return str(root)


def make_audio_sets(root: Path) -> dict[str, Path]:
    """``reference/`` and ``generated/`` dirs of short clips named by prompt id, a prompts JSONL, and sidecars."""
    from n2m import audio

    sr = 16000
    ref, gen = root / "reference", root / "generated"
    ref.mkdir()
    gen.mkdir()
    for i, pid in enumerate(PROMPTS):
        audio.write(ref / f"{pid}.wav", tone(2.5, sr, 220 * (i + 1), seed=i), sr)
        audio.write(gen / f"{pid}.flac", tone(3.2, 24000, 230 * (i + 1), seed=100 + i, noise=0.1), 24000)
        (gen / f"{pid}.json").write_text(json.dumps({"id": pid, "checkpoints": ["runs/gen/last.ckpt"],
                                                     "label_set": "demo-labels", "build": "b1"}))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in PROMPTS.items()))
    return {"reference": ref, "generated": gen, "prompts": prompts, "root": root}


@pytest.fixture(scope="module")
def audio_sets(tmp_path_factory) -> dict[str, Path]:
    return make_audio_sets(tmp_path_factory.mktemp("sets"))

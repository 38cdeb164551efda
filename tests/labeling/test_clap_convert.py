"""n2m.labeling.convert: LAION CLAP checkpoint -> transformers, by round trip through an independent inverse map."""

from __future__ import annotations

import collections
import dataclasses
import re

import numpy as np
import pytest
import torch

from n2m.clap import ClapEmbedder
from n2m.errors import UserError
from n2m.labeling.convert import convert
from n2m.labeling.presets import build_clap, get_preset, save_clap

CAPTIONS = ["a calm piano piece", "fast techno with drums", "sad violin melody", "happy guitar pop song"]


def _to_laion(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers ClapModel state dict -> LAION CLAP naming (written independently of n2m.labeling.convert)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = collections.defaultdict(dict)
    for key, value in hf.items():
        if key.startswith("text_model."):
            out["text_branch." + key[len("text_model."):]] = value
        elif key.startswith(("text_projection.", "audio_projection.")):
            out[key.replace(".linear1.", ".0.").replace(".linear2.", ".2.")] = value
        elif key.startswith("audio_model.audio_encoder."):
            k = "audio_branch." + key[len("audio_model.audio_encoder."):]
            k = k.replace("batch_norm.", "bn0.").replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
            k = k.replace("attention.output.dense", "attn.proj").replace("attention.self.relative", "attn.relative")
            k = k.replace("intermediate.dense", "mlp.fc1").replace(".output.dense", ".mlp.fc2")
            match = re.fullmatch(r"(.+)\.attention\.self\.(query|key|value)\.(weight|bias)", k)
            if match:
                qkv[f"{match.group(1)}.attn.qkv.{match.group(3)}"][match.group(2)] = value
            else:
                out[k] = value
        else:
            out[key] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["query"], parts["key"], parts["value"]], dim=0)
    return out


LAION_ONLY = {
    "audio_branch.spectrogram_extractor.stft.conv_real.weight": torch.zeros(257, 1, 512),
    "audio_branch.logmel_extractor.melW": torch.zeros(257, 32),
    "audio_branch.layers.0.blocks.1.attn_mask": torch.zeros(64, 16, 16),
    "audio_branch.tscam_conv.weight": torch.zeros(527, 32, 2, 3),
    "audio_branch.head.bias": torch.zeros(527),
    "text_transform.sequential.0.weight": torch.zeros(16, 16),
    "audio_transform.sequential.3.bias": torch.zeros(16),
}


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A micro CLAP with two blocks in the first stage (so a shifted-window block exists), saved the HF way."""
    preset = get_preset("micro")
    preset = dataclasses.replace(preset, audio=dict(preset.audio, depths=[2, 1, 1]))
    model, features, tokenizer = build_clap(preset, CAPTIONS * 4, seed=3)
    root = tmp_path_factory.mktemp("orig")
    save_clap(root / "hf", model, features, tokenizer)
    from transformers import RobertaConfig

    text = model.config.text_config
    RobertaConfig(vocab_size=text.vocab_size, hidden_size=text.hidden_size, num_hidden_layers=text.num_hidden_layers,
                  num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size,
                  max_position_embeddings=text.max_position_embeddings, type_vocab_size=text.type_vocab_size,
                  pad_token_id=text.pad_token_id).save_pretrained(root / "roberta")
    tokenizer.save_pretrained(root / "roberta")
    laion = {"module." + k: v.clone() for k, v in _to_laion(model.state_dict()).items()}
    laion.update({"module." + k: v for k, v in LAION_ONLY.items()})
    feature_args = dict(sampling_rate=features.sampling_rate, fft_window_size=features.fft_window_size,
                        hop_length=features.hop_length, frequency_min=features.frequency_min,
                        frequency_max=features.frequency_max)
    return {"root": root, "model": model, "laion": laion, "features": feature_args}


def _save(path, laion: dict) -> str:
    torch.save({"state_dict": laion, "epoch": 15}, path)
    return str(path)


def test_round_trip_gives_identical_weights_and_embeddings(original, tmp_path):
    ckpt = _save(tmp_path / "clap.pt", original["laion"])
    record = convert(ckpt, str(original["root"] / "roberta"), str(tmp_path / "out"), original["features"],
                     spec_size=128)
    assert set(record["dropped"]) == set(LAION_ONLY) | {
        "text_branch.embeddings.position_ids", "text_branch.embeddings.token_type_ids"}
    converted = ClapEmbedder.from_pretrained(str(tmp_path / "out"))
    reference = ClapEmbedder.from_pretrained(str(original["root"] / "hf"))
    ref_state = reference.model.state_dict()
    for key, value in converted.model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    assert converted.model.config.audio_config.depths == [2, 1, 1]
    sr = reference.sample_rate
    clip = (0.1 * np.random.default_rng(0).standard_normal(int(14 * sr))).astype(np.float32)
    np.testing.assert_array_equal(converted.embed_audio([clip], sr), reference.embed_audio([clip], sr))
    np.testing.assert_array_equal(converted.embed_text(CAPTIONS), reference.embed_text(CAPTIONS))


def test_unmapped_checkpoint_key_fails_loudly(original, tmp_path):
    laion = dict(original["laion"], **{"module.audio_branch.mystery.weight": torch.zeros(3)})
    with pytest.raises(UserError, match=r"no mapping.*audio_branch\.mystery\.weight"):
        convert(_save(tmp_path / "x.pt", laion), str(original["root"] / "roberta"), str(tmp_path / "o"))


def test_unfilled_transformers_weight_fails_loudly(original, tmp_path):
    laion = {k: v for k, v in original["laion"].items() if k != "module.text_projection.2.bias"}
    with pytest.raises(UserError, match=r"unfilled.*text_projection\.linear2\.bias"):
        convert(_save(tmp_path / "x.pt", laion), str(original["root"] / "roberta"), str(tmp_path / "o"))


class _NotATensor:
    pass


def test_checkpoint_with_pickled_objects_is_refused(original, tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": original["laion"], "extra": _NotATensor()}, path)
    with pytest.raises(UserError, match="weights-only"):
        convert(str(path), str(original["root"] / "roberta"), str(tmp_path / "o"))


def test_cli_convert(original, tmp_path, capsys):
    from n2m.cli import main

    ckpt = _save(tmp_path / "clap.pt", original["laion"])
    out = tmp_path / "cli_out"
    argv = ["clap", "convert", ckpt, "--text-model", str(original["root"] / "roberta"), "--out", str(out),
            "--sample-rate", "16000", "--fmax", "8000", "--spec-size", "128"]
    assert main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    assert (out / "conversion.json").is_file() and (out / "model.safetensors").is_file()
    assert main(argv) == 2  # refuses to overwrite without --overwrite
    assert "not empty" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0

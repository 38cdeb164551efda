"""n2m.clap.ClapEmbedder: loading through the production path, the window rule, determinism, text cache."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import soxr
import torch

from n2m.clap import ClapEmbedder, repeat_pad, split_windows, window_starts
from n2m.errors import UserError


def _noise(seconds: float, sr: int, seed: int = 0, channels: int | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (int(seconds * sr),) if channels is None else (channels, int(seconds * sr))
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def _raw_by_hand(embedder: ClapEmbedder, windows: list[np.ndarray]) -> np.ndarray:
    """Raw window embeddings computed straight from transformers' extractor and the towers."""
    fe = embedder.feature_extractor
    feats = fe(windows, sampling_rate=fe.sampling_rate, truncation="rand_trunc", return_tensors="pt")
    with torch.no_grad():
        pooled = embedder.model.audio_model(input_features=feats["input_features"]).pooler_output
        return embedder.model.audio_projection(pooled).numpy()


def test_loads_through_production_path(micro_embedder, micro_clap_dir):
    assert micro_embedder.sample_rate == 16_000
    assert micro_embedder.window_s == 10.0
    assert len(micro_embedder.model_id) == 40
    again = ClapEmbedder.from_pretrained(micro_clap_dir)
    assert again.model_id == micro_embedder.model_id


def test_missing_and_invalid_directories_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a CLAP model directory"):
        ClapEmbedder.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clap"}))
    with pytest.raises(UserError, match="cannot load CLAP model"):
        ClapEmbedder.from_pretrained(str(tmp_path))


def test_window_ranges_closed_form():
    w, tail = 100, 50
    assert window_starts(0, w, tail) == []
    assert window_starts(30, w, tail) == [(0, 30)]  # shorter than a window: one window
    assert window_starts(200, w, tail) == [(0, 100), (100, 200)]
    assert window_starts(249, w, tail) == [(0, 100), (100, 200)]  # 49-sample tail dropped
    assert window_starts(250, w, tail) == [(0, 100), (100, 200), (200, 250)]


def test_repeat_pad_is_laion_repeatpad():
    x = np.arange(1, 4, dtype=np.float32)  # 3 samples -> tiled 3x into 10, then one zero
    np.testing.assert_array_equal(repeat_pad(x, 10), [1, 2, 3, 1, 2, 3, 1, 2, 3, 0])
    np.testing.assert_array_equal(repeat_pad(np.arange(12.0), 10), np.arange(10.0))


def test_clip_embedding_is_normalised_mean_of_raw_window_embeddings(micro_embedder):
    sr = micro_embedder.sample_rate
    t = np.arange(25 * sr) / sr
    clip = np.where(t < 10, 0.5 * _noise(25, sr), 0.01 * _noise(25, sr, seed=9))
    clip = (clip + np.where(t >= 20, 0.3 * np.sin(2 * np.pi * 440 * t), 0)).astype(np.float32)
    # windows [0, 10), [10, 20), repeatpad([20, 25)): loud noise, quiet noise, tone
    windows = [clip[: 10 * sr], clip[10 * sr : 20 * sr], repeat_pad(clip[20 * sr :], 10 * sr)]
    raw = _raw_by_hand(micro_embedder, windows)
    expected = raw.mean(axis=0) / np.linalg.norm(raw.mean(axis=0))
    got = micro_embedder.embed_audio([clip], sr)[0]
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # the normalised-then-averaged variant is a different vector: the rule matters
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    wrong = unit.mean(axis=0) / np.linalg.norm(unit.mean(axis=0))
    assert np.abs(wrong - expected).max() > 1e-4  # 50x the tolerance above


def test_short_tail_dropped_and_short_clip_one_window(micro_embedder):
    sr = micro_embedder.sample_rate
    clip = _noise(23, sr, seed=1)  # 3 s tail < 5 s: only the two full windows count
    raw = _raw_by_hand(micro_embedder, [clip[: 10 * sr], clip[10 * sr : 20 * sr]])
    mean = raw.mean(axis=0)
    np.testing.assert_allclose(micro_embedder.embed_audio([clip], sr)[0], mean / np.linalg.norm(mean), atol=1e-5)
    short = _noise(4, sr, seed=2)
    raw = _raw_by_hand(micro_embedder, [repeat_pad(short, 10 * sr)])[0]
    np.testing.assert_allclose(micro_embedder.embed_audio([short], sr)[0], raw / np.linalg.norm(raw), atol=1e-5)


def test_resampling_and_downmix_follow_the_rules(micro_embedder):
    sr_in, sr = 24_000, micro_embedder.sample_rate
    stereo = _noise(12, sr_in, seed=3, channels=2)
    mono_at_model_rate = soxr.resample(stereo.mean(axis=0), sr_in, sr, quality="HQ").astype(np.float32)
    expected = micro_embedder.embed_audio([mono_at_model_rate], sr)
    np.testing.assert_allclose(micro_embedder.embed_audio([stereo], sr_in), expected, atol=1e-5)
    assert len(split_windows(mono_at_model_rate, 10 * sr, 5 * sr)) == 1  # 2 s tail dropped


def test_batching_does_not_change_embeddings(micro_embedder):
    sr = micro_embedder.sample_rate
    clips = [_noise(d, sr, seed=i) for i, d in enumerate((31, 9, 20, 15.5))]
    one = micro_embedder.embed_audio(clips, sr, batch_size=1)
    many = micro_embedder.embed_audio(clips, sr, batch_size=7)
    np.testing.assert_allclose(one, many, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(many, axis=1), 1.0, atol=1e-5)


def test_no_randomness_even_where_the_extractor_would_crop(micro_embedder, tmp_path):
    sr = micro_embedder.sample_rate
    clip = _noise(25, sr, seed=4)
    fe = micro_embedder.feature_extractor
    crops = []
    for seed in (1, 2):  # the extractor itself random-crops a long input: the check below can fail
        np.random.seed(seed)
        crops.append(fe([clip], sampling_rate=sr, truncation="rand_trunc", return_tensors="np")["input_features"])
    assert not np.array_equal(crops[0], crops[1])
    outs = []
    for seed in (1, 2):
        np.random.seed(seed)
        torch.manual_seed(seed)
        outs.append(micro_embedder.embed_audio([clip], sr))
    np.testing.assert_array_equal(outs[0], outs[1])


def test_fusion_models_are_deterministic(micro_clap_dir, tmp_path):
    from n2m.labeling.presets import build_clap, get_preset, save_clap

    preset = get_preset("micro")
    preset = dataclasses.replace(preset, audio=dict(preset.audio, enable_fusion=True, fusion_type="aff_2d"))
    embedder = ClapEmbedder.from_pretrained(str(save_clap(tmp_path / "fused", *build_clap(preset, ["a b c"] * 5))))
    assert embedder.fusion
    clip = _noise(12, embedder.sample_rate, seed=5)
    outs = []
    for seed in (1, 2, 3):
        np.random.seed(seed)
        outs.append(embedder.embed_audio([clip, clip[:50_000]], embedder.sample_rate))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])


def test_text_embeddings_normalised_and_cached(micro_clap_dir):
    texts = ["a calm piano piece", "fast techno with drums", "sad violin melody", "happy guitar pop song"]
    embedder = ClapEmbedder.from_pretrained(micro_clap_dir)
    first = embedder.embed_text(texts, batch_size=2)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    # independent computation: transformers' own (normalising) text features, one text at a time
    for text, vector in zip(texts, first):
        tokens = embedder.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            ref = embedder.model.get_text_features(input_ids=tokens["input_ids"],
                                                   attention_mask=tokens["attention_mask"]).pooler_output[0]
        np.testing.assert_allclose(vector, ref.numpy(), atol=1e-5)
    np.testing.assert_array_equal(embedder.embed_text(texts[::-1]), first[::-1])  # cache hits: bit-exact
    small = ClapEmbedder.from_pretrained(micro_clap_dir, text_cache_size=3)
    np.testing.assert_allclose(small.embed_text(texts), first, atol=1e-6)
    assert len(small._text_cache) == 3  # LRU bound


def test_text_token_states_shapes(micro_embedder):
    states, mask = micro_embedder.text_token_states(["a calm piano piece", "drums"], max_length=12)
    assert states.shape == (2, 12, micro_embedder.text_hidden_size)
    assert mask.shape == (2, 12)
    assert mask[0].sum() > mask[1].sum() >= 3  # <s> drums </s>
    assert not states.requires_grad


@pytest.mark.parametrize("fusion", [False, True])
def test_torch_log_mel_matches_the_feature_extractor(micro_embedder, fusion):
    """The accelerator path (torch.stft) against transformers' NumPy extractor, for both filter banks."""
    sr = micro_embedder.sample_rate
    rng = np.random.default_rng(6)
    windows = [(0.2 * rng.standard_normal(10 * sr)).astype(np.float32),
               (1e-3 * np.sin(np.arange(10 * sr) * 0.05)).astype(np.float32)]
    micro_embedder.fusion, micro_embedder._mel = fusion, None
    try:
        ours = micro_embedder.torch_log_mel(windows).numpy()
    finally:
        micro_embedder.fusion, micro_embedder._mel = False, None
    fe = micro_embedder.feature_extractor
    ref = fe(windows, sampling_rate=sr, truncation="fusion" if fusion else "rand_trunc", return_tensors="np")
    assert ours.shape == ref["input_features"].shape
    np.testing.assert_allclose(ours, ref["input_features"], atol=2e-3)  # dB

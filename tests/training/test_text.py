"""Text encoders through the production loading path: a tiny random T5 directory and a micro CLAP directory."""

from __future__ import annotations

import pytest
import torch

from n2m.errors import UserError
from n2m.training.text import CachedTextEncoder, load_text_encoder, text_width


def test_t5_states_match_the_model_run_directly(tiny_t5):
    from transformers import AutoTokenizer, T5EncoderModel

    encoder = load_text_encoder(f"t5:{tiny_t5}", 64)
    texts = ["a calm piano piece with soft strings", "rock", " ", "jazz " * 100]
    states, mask = encoder.encode(texts)
    assert states.shape == (4, 64, 32) and mask.shape == (4, 64) and mask.dtype == torch.bool
    assert encoder.dim == text_width(f"t5:{tiny_t5}") == 32

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    model = T5EncoderModel.from_pretrained(tiny_t5).eval()
    for i, text in enumerate(texts[:2]):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        n = ids.shape[1]
        assert mask[i].sum() == n and mask[i, :n].all()  # right-padded, one True per token (+ </s>)
        with torch.no_grad():
            ref = model(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(states[i, :n], ref, atol=1e-5, rtol=1e-4)
        assert (states[i, n:] == 0).all()
    assert not mask[2].any() and (states[2] == 0).all()  # blank caption: unconditional
    assert mask[3].all()  # truncated to the token length
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_cache_returns_the_same_states_without_re_encoding(tiny_t5):
    inner = load_text_encoder(f"t5:{tiny_t5}", 16)
    calls = []
    original = inner._states
    inner._states = lambda texts: (calls.append(list(texts)), original(texts))[1]
    cached = CachedTextEncoder(inner, max_items=3)
    first = cached.encode(["rock", "jazz", "rock"])
    second = cached.encode(["jazz", "rock"])
    assert calls == [["rock", "jazz"]]  # each distinct caption encoded once
    torch.testing.assert_close(second[0], first[0][[1, 0]])
    assert torch.equal(second[1], first[1][[1, 0]])
    direct = inner.encode(["rock", "jazz", "rock"])
    torch.testing.assert_close(first[0], direct[0])
    cached.encode(["a", "b", "c", "d"])
    assert len(cached._cache) == 3  # LRU bound


def test_clap_text_tower_as_encoder(tmp_path):
    from n2m.labeling.presets import build_clap, save_clap

    model, features, tokenizer = build_clap("micro", ["a calm piano piece", "fast drums", "sad violin"] * 4, seed=0)
    path = save_clap(tmp_path / "clap", model, features, tokenizer)
    encoder = load_text_encoder(f"clap:{path}", 64)
    states, mask = encoder.encode(["a calm piano piece", ""])
    assert states.shape == (2, 64, encoder.dim) and encoder.dim == text_width(f"clap:{path}")
    assert 0 < int(mask[0].sum()) <= 32 and not mask[1].any()  # the tower's own limit (32) is padded to 64
    assert (states[0, ~mask[0]] == 0).all()


@pytest.mark.parametrize("spec", ["t5", "bert:/x", "t5:/does/not/exist"])
def test_bad_specs_are_one_line_user_errors(spec):
    with pytest.raises(UserError):
        load_text_encoder(spec, 64)

"""Fixtures for the labelling tests: tiny random CLAP models saved in the transformers layout."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CAPTIONS = [
    "a calm piano piece", "fast techno with drums", "sad violin melody", "happy guitar pop song",
    "ambient synth pad", "upbeat jazz with saxophone", "slow acoustic folk", "energetic rock with electric guitar",
]


@pytest.fixture(scope="session")
def micro_clap_dir(tmp_path_factory):
    """A random ``micro`` preset CLAP directory, made by the same factory as ``n2m clap-train``."""
    from labeling.presets import build_clap, save_clap

    model, features, tokenizer = build_clap("micro", CAPTIONS * 4, seed=0)
    return str(save_clap(tmp_path_factory.mktemp("micro_clap"), model, features, tokenizer))


@pytest.fixture(scope="session")
def micro_embedder(micro_clap_dir):
    from n2m.clap import ClapEmbedder

    return ClapEmbedder.from_pretrained(micro_clap_dir)

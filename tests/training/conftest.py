"""Fixtures for the training tests: a tiny build + label set written to the contract, and a tiny random T5."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

from builders import LONG, SHORT, write_build, write_tiny_t5  # noqa: E402


@pytest.fixture(scope="session")
def tiny_build(tmp_path_factory) -> dict:
    """4 train shards of 3 clips and 1 valid shard of 4 clips (2 s, 24 kHz), label set ``tiny``."""
    root = tmp_path_factory.mktemp("build")
    info = write_build(root, {"train": [3, 3, 3, 3], "valid": [4]})
    return {"root": str(root), **info}


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    """A random 1-layer T5 encoder (d_model 32) + word-level tokenizer, as a local HF directory."""
    texts = LONG + SHORT + [f"track {i} by the testers" for i in range(32)]
    return str(write_tiny_t5(tmp_path_factory.mktemp("t5"), texts))


@pytest.fixture(scope="session")
def joint_models(tmp_path_factory) -> tuple[str, str]:
    """Two tiny random joint audio-text models (transformers CLAP directories of ``n2m clap-train``'s ``micro`` preset,
    16-d embeddings, 16 kHz, 10 s windows) that differ in their weights: A and B."""
    from n2m.labeling.presets import build_clap, save_clap

    texts = LONG + SHORT + ["a calm piano piece", "loud rock drums"]
    return tuple(str(save_clap(tmp_path_factory.mktemp(f"joint_{name}"), *build_clap("micro", texts * 4, seed=seed)))
                 for seed, name in enumerate("ab"))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest on one intra-op thread (and do not stall when the cores are shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Tiny inputs for the training tests, written by the data contracts (docs/architecture.md section 3, ``n2m.schema``):
a build (WebDataset shards of ``{key}.flac`` + ``{key}.json``, commit markers, index.parquet, build.json), a label set
(LABELS_SCHEMA tables + manifest.json) and a random T5 encoder with a tokenizer trained on the captions."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import webdataset as wds

from n2m.audio import encode_flac
from n2m.layout import BuildLayout
from n2m.schema import INDEX_SCHEMA, LABELS_SCHEMA, clip_key, source_id
from n2m.storage import write_json

SR = 24_000
LONG = ["a calm piano piece with soft strings", "an energetic rock song with loud drums",
        "a slow ambient pad drifting in space", "a jazzy tune with a walking bass line"]
SHORT = ["piano", "rock", "ambient", "jazz", "happy", "sad", "fast", "slow"]


def tone(seed: int, seconds: float, sr: int = SR) -> np.ndarray:
    """A harmonic tone with a vibrato and an envelope: float32 ``[1, T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(110, 440)
    phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    x = sum(rng.uniform(0.1, 0.3) / k * np.sin(k * phase) for k in range(1, 5))
    env = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t) ** 2
    return (x * env).astype(np.float32)[None, :]


def write_build(root: Path, shards: dict[str, list[int]], seconds: float = 2.0, labels: str = "tiny",
                holdout: bool = False, build_id: str = "test-build-0001") -> dict:
    """Write a build with ``shards[split] = [clips per shard, ...]`` and a label set named ``labels`` made from it.

    Markers record each tar's byte count, SHA-1 and clip keys, as n2m build's do; ``holdout`` marks every source held
    out (``meta.holdout``). Returns ``{"keys": {split: [keys]}, "captions": {key: {"long": [...], "short": [...]}}}``.
    """
    layout = BuildLayout(str(root))
    rows, keys, captions = [], {}, {}
    label_rows: dict[str, list[dict]] = {}
    n = 0
    for split, sizes in shards.items():
        Path(layout.shard_dir(split)).mkdir(parents=True, exist_ok=True)
        keys[split] = []
        for index, count in enumerate(sizes):
            shard = layout.shard(split, index)
            with wds.TarWriter(shard) as sink:
                for _ in range(count):
                    src = source_id(f"file:///corpus/{split}/{n}.wav")
                    key = clip_key(src, 0)
                    audio = tone(n, seconds)
                    meta = {"key": key, "source_id": src, "source_uri": f"file:///corpus/{split}/{n}.wav",
                            "offset_s": 0.0, "duration_s": seconds, "sample_rate": SR, "channels": 1, "split": split,
                            "rms_db": -20.0, "meta": {"title": f"track {n}", "holdout": holdout},
                            "text": [f"track {n} by the testers"]}
                    sink.write({"__key__": key, "flac": encode_flac(audio, SR), "json": json.dumps(meta).encode()})
                    rows.append({"key": key, "source_id": src, "source_uri": meta["source_uri"], "clip_index": 0,
                                 "split": split, "shard": Path(shard).name, "offset_s": 0.0, "duration_s": seconds,
                                 "padded": False, "sample_rate": SR, "channels": 1, "rms_db": -20.0})
                    long = [LONG[n % len(LONG)]]
                    short = [SHORT[n % len(SHORT)], SHORT[(n + 3) % len(SHORT)]]
                    captions[key] = {"long": long, "short": short}
                    label_rows.setdefault(split, []).extend([
                        {"key": key, "vocab": "lf", "kind": "long", "topk_ids": ["a"], "topk_scores": [0.5],
                         "captions": long},
                        {"key": key, "vocab": "sf", "kind": "short", "topk_ids": ["b", "c"],
                         "topk_scores": [0.4, 0.3], "captions": short},
                    ])
                    keys[split].append(key)
                    n += 1
            commit(Path(shard), keys[split][-count:] if count else [])
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=INDEX_SCHEMA), buffer)
    Path(layout.index).write_bytes(buffer.getvalue())
    write_json(layout.build_json, {"build_id": build_id, "config": {"sample_rate": SR}, "counts": {"clips": n}})
    Path(layout.label_dir(labels)).mkdir(parents=True, exist_ok=True)
    for split, table_rows in label_rows.items():
        pq.write_table(pa.Table.from_pylist(table_rows, schema=LABELS_SCHEMA), layout.label_table(labels, split, 0))
    write_json(layout.label_manifest(labels), {"name": labels, "build": {"id": build_id}, "k": 1, "k_prime": 1,
                                               "seed": 0})
    return {"keys": keys, "captions": captions}


def commit(tar: Path, keys: list[str]) -> None:
    """Write the commit marker of a shard as n2m build does: the tar's byte count and SHA-1, and its clips."""
    data = tar.read_bytes()
    write_json(str(tar.with_suffix(".json")), {"shard": tar.name, "clips": [{"key": k} for k in keys],
                                                "tar": {"bytes": len(data), "sha1": hashlib.sha1(data).hexdigest()}})


def write_index(root: Path, rows: list[tuple[str, str, str, float]]) -> None:
    """``index.parquet`` with one row per ``(key, split, shard, seconds)``."""
    table = pa.Table.from_pylist([
        {"key": key, "source_id": key.split("_")[0], "source_uri": f"file:///{key}.wav", "clip_index": 0,
         "split": split, "shard": shard, "offset_s": 0.0, "duration_s": seconds, "padded": False, "sample_rate": SR,
         "channels": 1, "rms_db": -20.0} for key, split, shard, seconds in rows], schema=INDEX_SCHEMA)
    pq.write_table(table, root / "index.parquet")


def tiny_checkpoint(stage: str, path: Path, text_encoder: str | None, build: str | None = None,
                    seed: int = 0, extra: tuple[str, ...] = (), voiced: bool = False, bank: int = 0) -> Path:
    """An ``n2m train`` checkpoint of an untrained tiny model at ``path``: the training CLI's own resolved config
    (its lineage resolved strictly, with hashes, when ``build`` is given), the network factory, and the checkpoint
    layout the training module writes (``net.*`` / ``ema.*`` weights, ``n2m`` section). ``extra``: more ``n2m train``
    flags (e.g. ``--condition``, ``--joint-model``, ``--melody``); ``voiced``: every zero-initialised weight matrix
    (combine layers, attention outputs, last convs) random too, so that the conditioning changes the output;
    ``bank``: a joint-embedding stage's bank of that many clips (keys ``clip-NNN``, random unit vectors) as training
    leaves one (:mod:`n2m.training.joint_bank`)."""
    import argparse

    import torch

    from n2m.provenance import now_iso, versions
    from n2m.training.networks.presets import build_network
    from n2m.training.train_cli import add_arguments, resolve_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = ["--stage", stage, "--build", build or str(path.parent / "no-build"), "--preset", "tiny",
            "--out", str(path.parent / stage), "--labels", "tiny"]
    argv += ["--text-encoder", text_encoder] if text_encoder else []
    # the tiny waveform generator attends over 1/4 of 3.2 kHz; coarser strides keep 30 s of attention cheap on CPU
    argv += ["--net", "strides=[16, 16]"] if stage == "generator" else []
    argv += list(extra)
    joint = "--joint-model" in extra  # the joint model's content hash is recorded even without a build
    config = resolve_config(parser.parse_args(argv), strict=build is not None)
    if joint and build is None:
        from dataclasses import replace

        from n2m.training.conditioning import resolve_conditioning
        from n2m.training.stages import get_stage

        config = replace(config, conditioning=resolve_conditioning(parser.parse_args(argv), get_stage(stage), True))
    torch.manual_seed(seed)
    net = build_network(config.net)
    torch.nn.init.normal_(net.head.weight, std=0.05)  # the output layer starts at zero; give the model a voice
    for param in net.parameters() if voiced else ():
        if param.dim() > 1 and not param.any():
            torch.nn.init.normal_(param, std=0.05)
    weights = net.state_dict()
    state = {**{f"net.{k}": v for k, v in weights.items()}, **{f"ema.{k}": v.clone() for k, v in weights.items()}}
    section = {"config": config.to_dict(), "versions": versions(), "saved_at": now_iso(), "global_step": 3}
    if bank:
        vectors = torch.nn.functional.normalize(torch.randn(bank, config.net.joint_dim), dim=1)
        section["joint_bank"] = {"keys": [f"clip-{i:03d}" for i in range(bank)], "vectors": vectors}
    torch.save({"state_dict": state, "global_step": 3, "n2m": section}, path)
    return path


def write_tiny_t5(path: Path, texts: list[str], d_model: int = 32) -> Path:
    """A random 1-layer T5 encoder and a word-level tokenizer trained on ``texts``, saved as a HF directory."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                        model_max_length=512)
    config = T5Config(vocab_size=tok.get_vocab_size(), d_model=d_model, d_ff=2 * d_model, d_kv=d_model // 2,
                      num_layers=1, num_heads=2, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5EncoderModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path

"""Labelling throughput, as ratios against baselines measured in the same run.

(a) Scoring: clips x entries x dim per second of ``n2m.labeling.topk.stream_topk`` over a vocabulary's cached text
    embeddings read from a ``.npy`` memory map (so: disk/page-cache reads + blocked matmul + top-K + merge), against a
    plain blocked matmul of the same shapes on in-memory arrays. Target: ratio >= 0.6.
(b) Audio embedding: ``ClapEmbedder.embed_audio`` on a batch of clips at the build's rate (resampling, 10 s windows,
    feature extraction, model, averaging) against the bare model forward (audio tower + projection) on the same
    batch's precomputed features. Target: overhead < 20%. Run on a LAION-size model (HTSAT-base, random weights).

    .venv/bin/python benchmarks/label.py [--device cuda] [--clips 2048 --entries 200000 --dim 512]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of  # noqa: E402
from n2m.clap import HFClapEmbedder, l2_normalise  # noqa: E402
from n2m.labeling.topk import ENTRY_BLOCK, memmap_blocks, stream_topk  # noqa: E402


def bench_scoring(clips: int, entries: int, dim: int, k: int, device: str, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    queries = l2_normalise(rng.standard_normal((clips, dim)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vocab.npy")
        matrix = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(entries, dim))
        for start in range(0, entries, ENTRY_BLOCK):
            stop = min(entries, start + ENTRY_BLOCK)
            matrix[start:stop] = l2_normalise(rng.standard_normal((stop - start, dim)).astype(np.float32))
        matrix.flush()
        del matrix
        in_memory = np.load(path)
        dev = torch.device(device)
        q = torch.from_numpy(queries).to(dev)
        blocks = [torch.from_numpy(b).to(dev) for b in memmap_blocks(in_memory)]
        flat = torch.empty(clips * ENTRY_BLOCK, device=dev)  # preallocated output: the baseline pays no allocation

        def plain():
            for block in blocks:
                torch.mm(q, block.T, out=flat[: clips * block.shape[0]].view(clips, block.shape[0]))

        def streamed():
            stream_topk(queries, memmap_blocks(np.load(path, mmap_mode="r")), k, device=device, query_block=clips)

        plain()
        streamed()
        t_plain, t_stream = best_of(plain, repeats), best_of(streamed, repeats)
    work = clips * entries * dim
    return {"clips": clips, "entries": entries, "dim": dim, "k": k, "plain_s": t_plain, "stream_s": t_stream,
            "plain_rate": work / t_plain, "stream_rate": work / t_stream, "ratio": t_plain / t_stream}


def bench_audio(clips: int, seconds: float, batch: int, device: str, repeats: int) -> dict:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from n2m.labeling.presets import train_tokenizer

    torch.manual_seed(0)
    model = ClapModel(ClapConfig())  # LAION HTSAT-base + RoBERTa-base shapes, random weights
    features = ClapFeatureExtractor(frequency_min=50, truncation="rand_trunc")
    tokenizer = train_tokenizer(["a b c"] * 4, 300, 64)
    embedder = HFClapEmbedder(model, features, tokenizer, model_id="bench", path="", device=device)
    sr = 24_000  # the build's rate: resampling to 48 kHz is part of the pipeline
    rng = np.random.default_rng(0)
    audio = [(0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32) for _ in range(clips)]
    windows = [w for clip in audio for w in embedder.prepare(clip, sr)]
    inputs = [embedder.features(windows[i:i + batch]) for i in range(0, len(windows), batch)]

    def bare():
        for item in inputs:
            embedder.raw_audio_embeddings(item)

    def pipeline():
        embedder.embed_audio(audio, sr, batch_size=batch)

    bare()
    pipeline()
    t_bare, t_pipe = best_of(bare, repeats), best_of(pipeline, repeats)
    return {"clips": clips, "seconds": seconds, "windows": len(windows), "batch": batch, "bare_s": t_bare,
            "pipeline_s": t_pipe, "overhead": t_pipe / t_bare - 1.0,
            "windows_per_s": len(windows) / t_pipe}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=2048)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--audio-clips", type=int, default=4)
    parser.add_argument("--audio-seconds", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    s = bench_scoring(args.clips, args.entries, args.dim, args.k, args.device, args.repeats)
    print(f"(a) scoring {s['clips']} clips x {s['entries']} entries x {s['dim']} dim, top-{s['k']}: "
          f"plain matmul {s['plain_rate'] / 1e9:.1f} G/s ({s['plain_s']:.2f} s), streamed top-K from .npy "
          f"{s['stream_rate'] / 1e9:.1f} G/s ({s['stream_s']:.2f} s) -> ratio {s['ratio']:.2f} (target >= 0.6)")
    a = bench_audio(args.audio_clips, args.audio_seconds, args.batch, args.device, args.repeats)
    print(f"(b) audio embedding, HTSAT-base, {a['clips']} clips x {a['seconds']:g} s at 24 kHz = {a['windows']} "
          f"windows, batch {a['batch']}: bare forward {a['bare_s']:.2f} s, embed_audio {a['pipeline_s']:.2f} s "
          f"-> overhead {100 * a['overhead']:.1f}% (target < 20%), {a['windows_per_s']:.2f} windows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

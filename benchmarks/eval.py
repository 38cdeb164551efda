"""Benchmark of ``n2m eval`` on CPU: files/s for embedding + FAD, and the share of time outside the model forward.

Models are random (VGGish at its real size with random weights; a tiny random CLAP), so the figures measure the
pipeline, not a model's quality. For each model:

- baseline: the bare model forward on pre-decoded, pre-resampled waveforms (the floor the pipeline can reach);
- cold: :func:`n2m.eval.audio_sets.embed_files` from FLAC files with the cache off (read + hash, decode, downmix and resample
  in prefetch threads, overlapped with the forward) followed by the Fréchet distance with both square-root paths, FAD-inf and a bootstrap;
- warm: the same with every embedding in the cache (what a re-run costs).

Printed: files/s of each, the cold pipeline's throughput as a ratio of the baseline, and the share of cold time spent
outside the forward (target: under 20%). Optionally renders the report page in headless Chromium (``--screenshot``).

    python benchmarks/eval.py [--files 16] [--seconds 10] [--screenshot out.png]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from n2m import audio  # noqa: E402
from n2m.eval import embeddings, frechet, vggish  # noqa: E402
from n2m.eval import report as reports  # noqa: E402
from n2m.eval.audio_sets import Preprocess, embed_files, list_audio  # noqa: E402


def make_files(root: Path, count: int, seconds: float, sr: int, seed: int) -> list[Path]:
    """FLAC files of a few partials plus noise (music-like spectra, not silence)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    paths = []
    for i in range(count):
        base = rng.uniform(110, 880)
        wave = sum(0.2 / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6.28)) for k in range(1, 6))
        wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t)) + 0.02 * rng.standard_normal(t.size)
        path = root / f"clip{i:04d}.flac"
        audio.write(path, np.stack([wave, np.roll(wave, 7)]).astype(np.float32), sr)  # stereo, like real files
        paths.append(path)
    return paths


def tiny_clap(root: Path) -> str:
    """A tiny random 48 kHz ClapModel directory (LAION's rate and 10 s windows, small towers)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "music", "piano", "drums"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                        unk_token="<unk>", model_max_length=16)
    text = dict(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=18, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    audio_cfg = dict(num_mel_bins=64, spec_size=256, patch_size=4, patch_stride=4, window_size=8, depths=[1, 1, 1, 1],
                     num_attention_heads=[1, 2, 4, 8], patch_embeds_hidden_size=24, hidden_size=192)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(text_config=text, audio_config=audio_cfg, projection_dim=128))
    features = ClapFeatureExtractor(feature_size=64, sampling_rate=48000, hop_length=480, fft_window_size=1024,
                                    max_length_s=10, truncation="rand_trunc", padding="repeatpad")
    model.save_pretrained(str(root))
    features.save_pretrained(str(root))
    tokenizer.save_pretrained(str(root))
    return str(root)


def bare_forward(embedder, files: list[Path]) -> float:
    """Seconds of the model forward alone, on waveforms decoded and resampled beforehand."""
    waves = [Preprocess().apply(audio.decode(str(p)), embedder.sample_rate) for p in files]
    embedder.embed(waves[0])  # warm-up (allocations, lazy init)
    best = float("inf")
    for _ in range(2):  # the faster of two passes: the machine is shared
        start = time.perf_counter()
        for wave in waves:
            embedder.embed(wave)
        best = min(best, time.perf_counter() - start)
    return best


def statistics(ref, gen) -> float:
    """Seconds for FD (both sqrt paths), FAD-inf and a 50-resample bootstrap."""
    start = time.perf_counter()
    ref_stats, gen_frames = frechet.stats_of(ref.all_frames()), gen.all_frames()
    frechet.frechet_distance(ref_stats, frechet.stats_of(gen_frames))
    if len(gen_frames) >= 20:
        frechet.fad_inf(ref_stats, gen_frames, frechet.default_sizes(len(gen_frames), 8))
    frechet.bootstrap(ref.frames, gen.frames, reps=50)
    return time.perf_counter() - start


def bench(name: str, embedder, ref_files: list[Path], gen_files: list[Path], cache: Path) -> dict:
    files = ref_files + gen_files
    baseline = bare_forward(embedder, files)
    start = time.perf_counter()
    ref = embed_files(ref_files, embedder, Preprocess(), None, progress=False)
    gen = embed_files(gen_files, embedder, Preprocess(), None, progress=False)
    stats_s = statistics(ref, gen)
    cold = time.perf_counter() - start
    forward = ref.timings["forward"] + gen.timings["forward"]
    embed_files(files, embedder, Preprocess(), cache, progress=False)  # fill the cache
    start = time.perf_counter()
    ref_w = embed_files(ref_files, embedder, Preprocess(), cache, progress=False)
    gen_w = embed_files(gen_files, embedder, Preprocess(), cache, progress=False)
    statistics(ref_w, gen_w)
    warm = time.perf_counter() - start
    parts = {k: ref.timings[k] + gen.timings[k] for k in ("forward", "wait", "cache")}
    parts["statistics"] = stats_s
    workers = {k: ref.timings[k] + gen.timings[k] for k in ("read_hash", "decode", "resample")}
    n = len(files)
    return {"model": name, "files": n, "baseline_fps": n / baseline, "cold_fps": n / cold, "warm_fps": n / warm,
            "ratio": baseline / cold, "outside_share": (cold - forward) / cold, "parts": parts, "cold_s": cold,
            "workers": workers}


def screenshot(html: Path, png: Path) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    if browser is None:
        print("screenshot: no chromium on this machine")
        return False
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,2400", f"--screenshot={png}", html.as_uri()], check=True,
                   capture_output=True, timeout=120)
    print(f"screenshot: {png} ({png.stat().st_size} bytes)")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=12, help="files per set (reference and generated)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per file")
    parser.add_argument("--rate", type=int, default=24000, help="sample rate of the files (n2m sample writes 24 kHz)")
    parser.add_argument("--models", default="vggish,clap", help="comma-separated: vggish, clap")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1 gives stable figures on a shared machine)")
    parser.add_argument("--screenshot", help="also write a report page and screenshot it to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ref_files = make_files(root / "ref", args.files, args.seconds, args.rate, 0)
        gen_files = make_files(root / "gen", args.files, args.seconds, args.rate, 1)
        specs = {}
        if "vggish" in args.models:
            weights = root / "vggish-random.pth"
            torch.save(vggish.random_state_dict(0), weights)
            specs["vggish"] = f"vggish:{weights}"
        if "clap" in args.models:
            specs["clap"] = f"clap:{tiny_clap(root / 'clap')}"
        for name, spec in specs.items():
            embedder = embeddings.load(spec)
            results.append(bench(name, embedder, ref_files, gen_files, root / "cache"))
        if args.screenshot:
            rep = reports.base_report("fad", "benchmark", vars(args))
            rep["metrics"] = {r["model"]: reports.metric(r["cold_fps"], r["files"], note="files/s") for r in results}
            reports.attach_samples(rep, [{"id": p.stem, "generated": str(p), "reference": str(q)}
                                         for p, q in zip(list_audio(str(root / "gen")), ref_files)], 2)
            _, html = reports.write(rep, root / "report")
            screenshot(html, Path(args.screenshot))
    print(f"\n{args.files} + {args.files} files of {args.seconds:g} s at {args.rate} Hz, stereo FLAC")
    header = f"{'model':8s} {'bare fwd f/s':>12s} {'cold f/s':>9s} {'warm f/s':>9s} {'cold/bare':>9s} {'outside fwd':>11s}"
    print(header)
    for r in results:
        print(f"{r['model']:8s} {r['baseline_fps']:12.2f} {r['cold_fps']:9.2f} {r['warm_fps']:9.1f} "
              f"{r['ratio']:9.2f} {100 * r['outside_share']:10.1f}%")
    for r in results:
        parts = ", ".join(f"{k} {v:.3f}s ({100 * v / r['cold_s']:.1f}%)" for k, v in r["parts"].items())
        hidden = ", ".join(f"{k} {v:.3f}s" for k, v in r["workers"].items())
        print(f"{r['model']}: wall {r['cold_s']:.2f}s = {parts}; in the prefetch threads (overlapped): {hidden}")
    worst = max(r["outside_share"] for r in results)
    print(f"\nshare of time outside the model forward: at most {100 * worst:.1f}% (target < 20%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

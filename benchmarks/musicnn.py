"""musicnn throughput in x real time per core: ``Musicnn.analyse`` (downmix, soxr resampling to 16 kHz, librosa log-mel,
3 s patches, network, per-patch reductions) against the bare network forward on the same batches (each clip's
precomputed patches), so the difference is the front end and the copies.

Needs the models (``n2m models fetch``). Clips: synthetic stereo music-like signals at the build's rate.

    .venv/bin/python benchmarks/musicnn.py [--models MSD_musicnn,MSD_vgg] [--clips 8 --seconds 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import best_of  # noqa: E402
from n2m.audio import downmix, resample  # noqa: E402
from n2m.errors import UserError  # noqa: E402
from n2m.musicnn import Musicnn  # noqa: E402


def make_clips(count: int, seconds: float, rate: int) -> list[np.ndarray]:
    """``count`` stereo ``[2, T]`` clips: a chord of sawtooth-ish partials with a pulsing envelope plus noise."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    clips = []
    for i in range(count):
        root = 110.0 * 2 ** (i / 12)
        tone = sum(np.sin(2 * np.pi * root * ratio * h * t) / h for ratio in (1.0, 1.25, 1.5) for h in range(1, 6))
        pulse = 0.5 + 0.5 * np.cos(2 * np.pi * 2.0 * t) ** 8
        mono = 0.1 * tone * pulse + 0.02 * rng.standard_normal(t.size)
        clips.append(np.stack([mono, np.roll(mono, 17)]).astype(np.float32))
    return clips


def bench(name: str, clips: list[np.ndarray], rate: int, seconds: float, batch_size: int, device: str,
          repeats: int) -> dict:
    model = Musicnn.from_pretrained(name, device=device)
    batches = [torch.as_tensor(model.patches(resample(downmix(clip), rate, Musicnn.SAMPLE_RATE)[0]), device=model.device)
               for clip in clips]  # each clip's patches: the batches analyse() feeds the network

    @torch.inference_mode()
    def forward():
        for x in batches:
            for start in range(0, x.shape[0], batch_size):
                model.net(x[start:start + batch_size])

    def front_end():
        for clip in clips:
            model.patches(resample(downmix(clip), rate, Musicnn.SAMPLE_RATE)[0])

    def analyse():
        for clip in clips:
            model.analyse(clip, rate, batch_size=batch_size)

    forward()  # warm-up (allocator, librosa's first call)
    analyse()
    audio_s = len(clips) * seconds
    full, bare, front = best_of(analyse, repeats), best_of(forward, repeats), best_of(front_end, repeats)
    return {"model": name, "patches": sum(int(x.shape[0]) for x in batches), "audio_s": audio_s, "analyse_s": full,
            "forward_s": bare, "front_end_s": front}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="MSD_musicnn,MSD_vgg", help="comma-separated installed musicnn models")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds per clip")
    parser.add_argument("--rate", type=int, default=24000, help="input sample rate (n2m build's default 24 kHz)")
    parser.add_argument("--batch-size", type=int, default=32, help="patches per forward")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (figures are per core)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="best of N (a shared machine is noisy)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cores = args.threads if args.device == "cpu" else 1
    print(f"torch threads: {torch.get_num_threads()}, CPU cores: {os.cpu_count()}, device: {args.device}")
    clips = make_clips(args.clips, args.seconds, args.rate)
    for name in args.models.split(","):
        try:
            r = bench(name, clips, args.rate, args.seconds, args.batch_size, args.device, args.repeats)
        except UserError as err:
            sys.exit(f"benchmarks/musicnn.py: {err}")
        full_rt, bare_rt = r["audio_s"] / r["analyse_s"], r["audio_s"] / r["forward_s"]
        print(f"{name}: {r['audio_s']:.0f} s of audio, {r['patches']} patches | analyse {r['analyse_s']:.2f} s = "
              f"{full_rt / cores:.0f}x real time per core | bare forward {r['forward_s']:.2f} s = "
              f"{bare_rt / cores:.0f}x per core | analyse overhead {r['analyse_s'] / r['forward_s'] - 1:+.0%} "
              f"(front end alone: resample + log-mel + patches {r['front_end_s']:.2f} s)")


if __name__ == "__main__":
    main()

"""Benchmark: ``n2m build`` against the decode floor measured in the same run.

The floor is one plain Python process doing only what no build can skip, file by file: read, decode, downmix, soxr
resample to 24 kHz and FLAC-encode the same files (``n2m.audio``). Figures:

- efficiency = floor CPU-seconds / (build wall-seconds x cores)  (1.0 = every core busy with floor work only;
  the issue asks >= 0.5 on 2 cores, aiming for 0.8)
- x realtime per core = audio seconds / (build wall-seconds x cores), for the build and for the floor
- CPU overhead = build CPU-seconds (driver + Beam workers) / floor CPU-seconds
- peak RSS of the whole build process tree (driver + workers, summed; sampled every 0.1 s)

The corpus (music-like stereo 44.1 kHz sources in FLAC, Ogg Vorbis and MP3) is generated once into ``--workdir`` and
reused by later runs with the same parameters. Usage: ``python benchmarks/build.py [--hours 4] [--cores N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from n2m import audio

SR = 44100
SEGMENT_S = 5.0
FORMATS = ("flac",) * 7 + ("ogg",) * 2 + ("mp3",)  # by source index modulo 10


def segment_bank(count: int = 24, seed: int = 0) -> list[np.ndarray]:
    """Short stereo 'music' segments: a few decaying harmonic notes with vibrato and soft noise, ``[2, T]`` each."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(SEGMENT_S * SR)) / SR
    bank = []
    for _ in range(count):
        y = np.zeros_like(t)
        for k in range(6):
            f0 = 82.4 * 2 ** (rng.integers(0, 36) / 12)
            start = k * SEGMENT_S / 6
            env = np.where(t >= start, np.exp(-(t - start) * rng.uniform(1.0, 4.0)), 0.0)
            phase = 2 * np.pi * f0 * t + 0.3 * np.sin(2 * np.pi * 5 * t)
            y += env * sum(np.sin(h * phase) / h**1.5 for h in (1, 2, 3, 4))
        y = 0.3 * y / np.max(np.abs(y))
        noise = 0.01 * rng.standard_normal((2, t.size))
        bank.append((np.stack([y, 0.8 * y]) + noise).astype(np.float32))
    return bank


def write_source(path: Path, index: int, seconds: float, bank: list[np.ndarray]) -> None:
    """A distinct source: a seeded sequence of bank segments with per-segment gain and channel balance."""
    rng = np.random.default_rng(1000 + index)
    parts = []
    for _ in range(int(round(seconds / SEGMENT_S))):
        segment = bank[rng.integers(len(bank))]
        gain = rng.uniform(0.4, 1.0)
        balance = rng.uniform(0.6, 1.0)
        parts.append(segment * np.array([[gain], [gain * balance]], np.float32))
    x = np.concatenate(parts, axis=1)
    fmt = {"flac": "FLAC", "ogg": "OGG", "mp3": "MP3"}[path.suffix[1:]]
    with sf.SoundFile(path, "w", SR, 2, format=fmt) as handle:  # block writes: one huge Vorbis write can crash
        for start in range(0, x.shape[1], SR * 5):
            handle.write(x[:, start:start + SR * 5].T)


def make_corpus(root: Path, sources: int, seconds: float) -> list[Path]:
    params = {"sources": sources, "seconds": seconds, "formats": FORMATS, "version": 1}
    stamp = root / "corpus.json"
    files = [root / f"{i:05d}.{FORMATS[i % len(FORMATS)]}" for i in range(sources)]
    if stamp.exists() and json.loads(stamp.read_text()) == params and all(f.exists() for f in files):
        return files
    root.mkdir(parents=True, exist_ok=True)
    bank = segment_bank()
    for i, path in enumerate(tqdm(files, desc="corpus", unit="source", mininterval=5)):
        write_source(path, i, seconds, bank)
    stamp.write_text(json.dumps(params))
    return files


def floor_one(path: Path, sample_rate: int = 24000) -> float:
    """Decode + downmix + soxr resample + FLAC encode of one file; returns its audio seconds."""
    decoded = audio.decode(path.read_bytes())
    audio.encode_flac(audio.resample(audio.downmix(decoded.samples), decoded.sample_rate, sample_rate), sample_rate)
    return decoded.duration_s


def floor(files: list[Path], sample_rate: int) -> tuple[float, float, float]:
    """(CPU seconds, wall seconds, audio seconds) of the floor work in one plain process."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    seconds = sum(floor_one(path, sample_rate) for path in files)
    return time.process_time() - cpu0, time.perf_counter() - wall0, seconds


def parallel_floor_wall(files: list[Path], sample_rate: int, cores: int) -> float:
    """Wall seconds of the floor work spread over ``cores`` processes (a hand-written ideal, no Beam): comparing
    the build with it in the same run factors out CPU taken by other programs on a shared machine."""
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    started = time.perf_counter()
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(partial(floor_one, sample_rate=sample_rate), files))
    return time.perf_counter() - started


def _tree_rss(root_pid: int) -> int:
    """Sum of VmRSS (bytes) over ``root_pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as handle:
                fields = dict(line.split(":", 1) for line in handle if ":" in line)
        except OSError:
            continue
        pid, ppid = int(entry), int(fields["PPid"])
        children.setdefault(ppid, []).append(pid)
        rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_build(src: Path, out: Path, cores: int, extra: list[str]) -> tuple[float, float, int, int]:
    """(wall seconds, CPU seconds of the whole tree, peak tree RSS bytes, exit code) of one ``n2m build``."""
    command = [sys.executable, "-m", "n2m.cli", "build", "--input", str(src), "--output", str(out), "--overwrite",
               "--no-progress", f"--direct_num_workers={cores}", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss(process.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(process.stdout.read() if process.stdout else "", file=sys.stderr)
    return wall, cpu, peak, process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/n2m-bench-build", help="corpus cache and build output")
    parser.add_argument("--hours", type=float, default=4.0, help="corpus size in hours of audio (default 4)")
    parser.add_argument("--source-seconds", type=float, default=120.0, help="duration of each source (default 120)")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="Beam workers = cores (default all)")
    parser.add_argument("--sample-rate", type=int, default=24000, help="build output rate (default 24000)")
    parser.add_argument("--min-efficiency", type=float, default=0.5, help="exit 1 below this efficiency")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure floor, parallel floor and build this many times each and keep the best of each "
                             "(on a shared machine the best run is the one least disturbed by others; default 1)")
    args, extra = parser.parse_known_args()
    workdir = Path(args.workdir)
    files = make_corpus(workdir / "corpus", max(1, round(args.hours * 3600 / args.source_seconds)), args.source_seconds)
    load_before = os.getloadavg()[0]
    floors, pool_walls, builds = [], [], []
    for _ in range(max(1, args.repeats)):
        floors.append(floor(files, args.sample_rate))
        pool_walls.append(parallel_floor_wall(files, args.sample_rate, args.cores))
        builds.append(run_build(workdir / "corpus", workdir / "out", args.cores,
                                ["--sample-rate", str(args.sample_rate), *extra]))
        if builds[-1][3] != 0:
            print(f"build failed with exit code {builds[-1][3]}", file=sys.stderr)
            return 1
    floor_cpu, floor_wall, audio_s = min(floors)
    pool_wall = min(pool_walls)
    wall, cpu, _, _ = min(builds)
    peak = max(b[2] for b in builds)
    result = {
        "sources": len(files), "audio_hours": audio_s / 3600, "cores": args.cores, "extra_build_args": extra,
        "repeats": len(builds), "build_walls_s": [b[0] for b in builds],
        "floor_cpu_s": floor_cpu, "floor_wall_s": floor_wall, "floor_x_realtime_per_core": audio_s / floor_cpu,
        "build_wall_s": wall, "build_cpu_s": cpu, "build_x_realtime_per_core": audio_s / (wall * args.cores),
        "efficiency": floor_cpu / (wall * args.cores), "cpu_overhead": cpu / floor_cpu,
        "peak_tree_rss_mb": peak / 2**20, "parallel_floor_wall_s": pool_wall,
        "wall_vs_parallel_floor": pool_wall / wall, "load_average_1min": [load_before, os.getloadavg()[0]],
    }
    (workdir / "result.json").write_text(json.dumps(result, indent=2))
    print(f"n2m build benchmark: {len(files)} sources, {audio_s / 3600:.2f} h of audio, {args.cores} cores")
    print(f"  floor (1 process):  {floor_cpu:7.1f} CPU-s   {audio_s / floor_cpu:7.0f}x realtime per core")
    print(f"  build:              {wall:7.1f} wall-s  {cpu:7.1f} CPU-s   "
          f"{result['build_x_realtime_per_core']:7.0f}x realtime per core")
    print(f"  efficiency = floor CPU / (build wall x cores) = {result['efficiency']:.2f}   "
          f"(CPU overhead vs floor {result['cpu_overhead']:.2f}x)")
    print(f"  parallel floor ({args.cores} plain processes, no Beam): {pool_wall:.1f} wall-s; "
          f"build reaches {result['wall_vs_parallel_floor']:.2f} of its speed")
    print(f"  peak RSS of the build process tree: {result['peak_tree_rss_mb']:.0f} MB; "
          f"1-min load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0 if result["efficiency"] >= args.min_efficiency else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of ``n2m synth`` on one core: audio seconds generated per second, against the cost of encoding alone.

Runs :func:`n2m.synth.corpus.generate` in this process (``workers=1``) for a few default-length tracks (35-150 s),
then, as the baseline measured in the same run, encodes the very same audio to the very same formats with
:func:`n2m.synth.corpus.encode_track` (the part no synthesiser can avoid). Printed: real-time factors from wall time and from this
process's CPU time (the honest one-core figure on a shared machine), the encode-only factor, and the ratio
(full job / encoding alone). Exits 1 when the CPU real-time factor is below the target of 20x.

    python benchmarks/synth.py [--tracks 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from n2m import audio  # noqa: E402
from n2m.synth.corpus import CorpusConfig, encode_track, generate, read_manifest  # noqa: E402

TARGET_X_REALTIME = 20.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=6, help="tracks to generate (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default 0)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate(CorpusConfig(seed=args.seed), tmp, args.tracks, workers=1, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = list(read_manifest(Path(tmp) / "manifest.jsonl"))
        decoded = [(audio.decode(Path(tmp) / row["path"]), row["format"]) for row in rows]

    enc_wall, enc_cpu = time.perf_counter(), time.process_time()
    for clip, fmt in decoded:
        encode_track(clip.samples, fmt, serial=1)
    enc_wall, enc_cpu = time.perf_counter() - enc_wall, time.process_time() - enc_cpu

    seconds = sum(row["duration_s"] for row in rows)
    formats = ", ".join(f"{n} {fmt}" for fmt, n in summary["formats"].items())
    print(f"synth benchmark: {len(rows)} tracks, {seconds:.0f} s of audio ({formats}), one process")
    print(f"  full job     : {wall:6.2f} s wall ({seconds / wall:6.1f}x real time), "
          f"{cpu:6.2f} s CPU ({seconds / cpu:6.1f}x real time)")
    print(f"  synthesis    : {summary['synth_s']:6.2f} s wall ({seconds / summary['synth_s']:6.1f}x real time)")
    print(f"  encode only  : {enc_wall:6.2f} s wall ({seconds / enc_wall:6.1f}x real time), "
          f"{enc_cpu:6.2f} s CPU ({seconds / enc_cpu:6.1f}x real time)  [baseline]")
    print(f"  ratio        : full job costs {cpu / enc_cpu:.1f}x the CPU time of encoding alone "
          f"({wall / enc_wall:.1f}x in wall time)")
    ok = seconds / cpu >= TARGET_X_REALTIME
    print(f"  target       : >= {TARGET_X_REALTIME:.0f}x real time on one core (CPU time): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

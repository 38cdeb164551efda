"""Benchmark: ``n2m build`` on a local Dask cluster vs the DirectRunner (multi-processing), same corpus, same cores.

Both builds are the real CLI in a subprocess (``benchmarks/build.py``'s corpus, decode floor and process-tree
measurement): the DirectRunner with ``--direct_num_workers=W``, then the DaskRunner with ``--dask-workers W`` (the job
starts and stops its LocalCluster, so the Dask wall time includes that). Figures:

- ratio = DirectRunner wall / Dask wall: Dask's build throughput relative to the DirectRunner's (issue 17 aims >= 0.8)
- efficiency of each = floor CPU-seconds / (build wall-seconds x W), as in ``benchmarks/build.py`` (1.0 = every core
  busy with decode-floor work only)
- the bare cost of starting and stopping a W-worker LocalCluster, measured on its own

On a shared machine run ``--repeats 3``: each figure keeps its best run. Usage:
``python benchmarks/build_dask.py [--hours 1] [--workers 2] [--repeats 1]`` (needs ``pip install 'n2m[dask]'``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import time
from pathlib import Path


def _build_benchmark():
    """``benchmarks/build.py`` as a module (corpus, floor and run_build are shared, not copied)."""
    spec = importlib.util.spec_from_file_location("n2m_bench_build", Path(__file__).with_name("build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cluster_overhead(workers: int) -> float:
    """Wall seconds to start and stop a ``workers``-process LocalCluster the way ``--dask-workers`` does."""
    from n2m.beam import local_dask_cluster

    started = time.perf_counter()
    with local_dask_cluster(workers, verbose=False):
        pass
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/n2m-bench-build", help="corpus cache and build output")
    parser.add_argument("--hours", type=float, default=1.0, help="corpus size in hours of audio (default 1)")
    parser.add_argument("--source-seconds", type=float, default=120.0, help="duration of each source (default 120)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of both runners (default 2)")
    parser.add_argument("--sample-rate", type=int, default=24000, help="build output rate (default 24000)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each build; the best is kept (default 1)")
    parser.add_argument("--min-ratio", type=float, default=0.0, help="exit 1 when the ratio is below this")
    args = parser.parse_args()
    from n2m.beam import dask_installed

    if not dask_installed():
        print("build_dask benchmark skipped: Dask is not installed (pip install 'n2m[dask]')")
        return 0
    bench = _build_benchmark()
    workdir = Path(args.workdir)
    files = bench.make_corpus(workdir / "corpus", max(1, round(args.hours * 3600 / args.source_seconds)),
                              args.source_seconds)
    common = ["--sample-rate", str(args.sample_rate)]
    runs = {"direct": [], "dask": []}
    floors, overheads = [], []
    for _ in range(max(1, args.repeats)):
        floors.append(bench.floor(files, args.sample_rate))
        for name, extra in (("direct", []), ("dask", ["--dask-workers", str(args.workers)])):
            wall, cpu, peak, code = bench.run_build(workdir / "corpus", workdir / f"out-{name}", args.workers,
                                                    [*common, *extra])
            if code != 0:
                print(f"{name} build failed with exit code {code}", file=sys.stderr)
                return 1
            runs[name].append((wall, cpu, peak))
        overheads.append(cluster_overhead(args.workers))
    floor_cpu, _, audio_s = min(floors)
    best = {name: min(values) for name, values in runs.items()}
    identical = outputs(workdir / "out-direct") == outputs(workdir / "out-dask")
    result = {
        "sources": len(files), "audio_hours": audio_s / 3600, "workers": args.workers, "repeats": len(floors),
        "floor_cpu_s": floor_cpu, "cluster_start_stop_s": min(overheads),
        **{f"{name}_wall_s": best[name][0] for name in runs},
        **{f"{name}_cpu_s": best[name][1] for name in runs},
        **{f"{name}_peak_tree_rss_mb": max(r[2] for r in runs[name]) / 2**20 for name in runs},
        **{f"{name}_efficiency": floor_cpu / (best[name][0] * args.workers) for name in runs},
        **{f"{name}_walls_s": [r[0] for r in runs[name]] for name in runs},
        "ratio_dask_vs_direct": best["direct"][0] / best["dask"][0],
        "outputs_identical": identical,
    }
    (workdir / "result_dask.json").write_text(json.dumps(result, indent=2))
    print(f"n2m build on Dask vs DirectRunner: {len(files)} sources, {audio_s / 3600:.2f} h of audio, "
          f"{args.workers} workers each, best of {len(floors)}")
    for name in runs:
        print(f"  {name:7s} {best[name][0]:7.1f} wall-s  {best[name][1]:7.1f} CPU-s  "
              f"efficiency {result[f'{name}_efficiency']:.2f}  peak RSS {result[f'{name}_peak_tree_rss_mb']:.0f} MB")
    print(f"  ratio (Dask throughput / DirectRunner throughput) = {result['ratio_dask_vs_direct']:.2f}; "
          f"LocalCluster start+stop alone {result['cluster_start_stop_s']:.1f} s; "
          f"shards and tables identical: {identical}")
    return 1 if result["ratio_dask_vs_direct"] < args.min_ratio or not identical else 0


def outputs(out: Path) -> dict[str, str]:
    """SHA-1 of every shard and of the two tables of a build, by path relative to ``out``."""
    paths = [*sorted((out / "shards").rglob("*.tar")), out / "index.parquet", out / "sources.parquet"]
    return {str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest() for p in paths}


if __name__ == "__main__":
    sys.exit(main())

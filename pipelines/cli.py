"""``n2m build``: audio files, globs, manifests or URLs -> WebDataset shards + index/sources tables + build.json.

Beam options follow n2m's one convention (n2m.beam, docs/scaling.md): ``--runner``, ``--dask-workers`` and any Beam
flag, so the same command runs on the DirectRunner (multi-processing over all cores by default), on a Dask cluster or
on Dataflow/Flink/Spark.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
from typing import Any

from n2m.beam import BeamSession, BeamSetup, add_beam_arguments, beam_setup, worker_output_to
from n2m.cli import old_spellings
from n2m.config import (
    FINITE,
    FRACTION,
    MAX_SAMPLE_RATE,
    NONNEGATIVE,
    NONNEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    SAMPLE_RATE,
    leaf,
    number,
    resolved,
)
from n2m.errors import JobFailed, UserError
from n2m.layout import BuildLayout, parse_shard_name
from n2m.provenance import now_iso, versions
from n2m.schema import BUILD_VERSION
from n2m.storage import Store, is_remote, read_json, write_json

_FLAC_RATIO = 0.6  # FLAC bytes / PCM_16 bytes of typical music, for turning --shard-size-mb into sources per shard
MAX_CHANNELS = 8  # 7.1 surround


def add_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group(
        "input and output",
        "Entries that cannot be read never stop a build: a symlink loop, a name that is not UTF-8, a FIFO or device, "
        "a malformed manifest row each become a failed source with its reason in OUT/sources.parquet. A file that "
        "libsndfile decodes short of the length its header declares (Ogg end granule, FLAC STREAMINFO, MP3 "
        "Xing/VBRI frame count, WAV data size) is decoded again with FFmpeg; it fails as truncated only when neither "
        "reaches the declared end, and the message column says when FFmpeg's decode was kept.")
    io.add_argument("--input", required=True, metavar="SRC",
                    help="a folder (searched recursively), a glob ('music/**/*.mp3'), one audio file, or a manifest "
                         "(.csv/.tsv/.jsonl/.parquet) with a 'path' or 'url' column; other columns go to each clip's "
                         "meta and a 'caption' column to its text. Paths and URLs may be local, http(s) or fsspec "
                         "URIs. An existing path is never read as a glob, and an input that lists no sources is an "
                         "error. A URI listed twice keeps its first row (a repeat with other captions is noted in "
                         "sources.parquet); NaN/Infinity become null and bytes become UTF-8 text, noted there too")
    old_spellings(io, io.add_argument(
        "--out", required=True, metavar="OUT",
        help="build folder (local path or fsspec URI); one build at a time holds OUT/build.lock"), "--output")
    io.add_argument("--extensions", default=",".join(_audio_extensions()),
                    help="file name endings a folder listing picks up (comma-separated; default: common audio)")
    audio = parser.add_argument_group("clips")
    audio.add_argument("--sample-rate", type=SAMPLE_RATE, default=24000,
                       help=f"output sample rate in Hz, at most {MAX_SAMPLE_RATE} (default 24000)")
    audio.add_argument("--channels", type=number(int, low=1, high=MAX_CHANNELS), default=1,
                       help=f"output channels, at most {MAX_CHANNELS}: 1 = mean downmix (default 1)")
    audio.add_argument("--clip-seconds", type=POSITIVE, default=30.0, help="clip length in seconds (default 30)")
    audio.add_argument("--hop-seconds", type=POSITIVE, default=None,
                       help="seconds between clip starts (default: --clip-seconds, i.e. no overlap)")
    audio.add_argument("--min-clip-seconds", type=POSITIVE, default=None,
                       help="shortest tail kept (zero-padded to a full clip); shorter tails are dropped and a source "
                            "shorter than this is filtered as too_short (default: half of --clip-seconds)")
    audio.add_argument("--silence-db", type=FINITE, default=-60.0,
                       help="clips whose RMS is below this many dBFS are dropped; a source with only such clips is "
                            "filtered as silent (default -60)")
    audio.add_argument("--max-source-seconds", type=POSITIVE, default=1200.0,
                       help="longer sources fail with reason too_long; also bounds memory, since a worker holds about "
                            "three float32 copies of the source it decodes (default 1200)")
    shards = parser.add_argument_group("shards and splits")
    shards.add_argument("--split", default="train=0.98,valid=0.01,test=0.01",
                        help="split fractions; each SOURCE goes to one split by a hash of its id, or to the split its "
                             "manifest row names in a 'split' column (default %(default)s)")
    shards.add_argument("--shard-size-mb", type=POSITIVE, default=256.0,
                        help="target shard size; sources are grouped into shards before decoding (so re-runs map "
                             "them to the same shards) assuming --typical-source-seconds each (default 256)")
    shards.add_argument("--typical-source-seconds", type=POSITIVE, default=240.0,
                        help="expected source duration used with --shard-size-mb (default 240)")
    shards.add_argument("--sources-per-shard", type=POSITIVE_INT, default=None,
                        help="sources per shard, overriding --shard-size-mb")
    fetching = parser.add_argument_group("fetching")
    fetching.add_argument("--max-source-mb", type=POSITIVE, default=512.0,
                          help="larger sources fail with reason too_large (default 512)")
    fetching.add_argument("--fetch-timeout", type=POSITIVE, default=30.0,
                          help="http(s) connect and per-read timeout in seconds (default 30)")
    fetching.add_argument("--fetch-deadline", type=POSITIVE, default=600.0,
                          help="seconds allowed for reading one source, every attempt and wait included; a source "
                               "not read by then fails with reason timeout (a server trickling bytes never trips "
                               "--fetch-timeout; default 600)")
    fetching.add_argument("--fetch-retries", type=NONNEGATIVE_INT, default=3,
                          help="extra attempts after a timeout, a connection error, HTTP 429 or 5xx (default 3)")
    fetching.add_argument("--fetch-backoff", type=NONNEGATIVE, default=1.0,
                          help="seconds before the first retry, doubling after each (default 1)")
    fetching.add_argument("--fetch-concurrency", type=POSITIVE_INT, default=4,
                          help="reads in flight per worker (default 4)")
    run = parser.add_argument_group("running")
    old_spellings(run, run.add_argument(
        "--decode-threads", type=POSITIVE_INT, default=1,
        help="sources decoded at once in each worker (codecs release the GIL; default 1)"), "--threads")
    run.add_argument("--overwrite", action="store_true",
                     help="delete an earlier build in OUT and start afresh; its label sets (OUT/labels) and embedding "
                          "caches (OUT/embeddings) are deleted too, since they describe the old shards")
    run.add_argument("--prune", action="store_true",
                     help="when committed shards no longer match the listing (inputs deleted or changed), delete "
                          "them (and shards holding duplicates or retries of their sources) and rebuild what the "
                          "listing still holds; without it such a build is refused")
    run.add_argument("--retry-failed", action="store_true",
                     help="re-attempt only the sources recorded as failed; newly good ones go to new shards and "
                          "committed shards are untouched")
    run.add_argument("--max-failure-rate", type=FRACTION, default=1.0,
                     help="exit non-zero (after writing the tables) when more than this fraction of sources failed "
                          "(default 1.0: never)")
    run.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan, then stop")
    old_spellings(run, run.add_argument("--quiet", action="store_true", help="no progress bar"), "--no-progress")
    add_beam_arguments(parser)
    leaf(parser, run_build)


def _audio_extensions() -> tuple[str, ...]:
    from pipelines.sources import AUDIO_EXTENSIONS

    return tuple(e.lstrip(".") for e in AUDIO_EXTENSIONS)


# ---------------------------------------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace):
    from pipelines.clips import ClipSettings
    from pipelines.fetch import FetchSettings
    from pipelines.shards import parse_splits

    hop = args.hop_seconds if args.hop_seconds is not None else args.clip_seconds
    minimum = args.min_clip_seconds if args.min_clip_seconds is not None else args.clip_seconds / 2
    frames = {flag: round(seconds * args.sample_rate) for flag, seconds in
              (("--clip-seconds", args.clip_seconds), ("--hop-seconds", hop), ("--min-clip-seconds", minimum))}
    short = [f"{flag} {seconds:g}" for (flag, n), seconds in zip(frames.items(), (args.clip_seconds, hop, minimum))
             if n < 1]
    checks = [  # each number's own range is its flag's type (n2m.config.number); these relate flags
        (minimum <= args.clip_seconds, "--min-clip-seconds must be at most --clip-seconds"),
        (not short, f"{', '.join(short)} is less than one frame at --sample-rate {args.sample_rate}"),
        (not (args.overwrite and args.retry_failed), "--overwrite and --retry-failed exclude each other"),
        (not (args.prune and args.retry_failed), "--prune and --retry-failed exclude each other"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(message)
    clip = ClipSettings(args.sample_rate, args.channels, args.clip_seconds, hop, minimum, args.silence_db,
                        args.max_source_seconds)
    fetch = FetchSettings(int(args.max_source_mb * (1 << 20)), args.fetch_timeout, args.fetch_retries,
                          args.fetch_backoff, args.fetch_deadline)
    per_shard = args.sources_per_shard or max(1, int(
        args.shard_size_mb * 1e6 // (args.typical_source_seconds * args.sample_rate * args.channels * 2 * _FLAC_RATIO)))
    return clip, fetch, parse_splits(args.split), per_shard


def run_build(args: argparse.Namespace) -> int:
    """Plan, run the Beam pipeline over pending shards, write the tables and build.json, print a summary."""
    started, started_iso = time.time(), now_iso()
    with _quiet_beam(args.verbose):  # Beam's import chatter (its GCP-client notes are dropped by n2m.beam)
        from pipelines import job
        from pipelines.lock import build_lock

    clip, fetch, splits, per_shard = _settings(args)
    with _quiet_beam(args.verbose):
        setup = beam_setup(args, env=job.WORKER_ENV)
    out = args.out.rstrip("/") if is_remote(args.out) else os.path.abspath(args.out)
    if not is_remote(out) and os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    with contextlib.nullcontext() if args.dry_run else build_lock(out):
        return _run_build(args, out, clip, fetch, splits, per_shard, setup, started, started_iso)


def _run_build(args: argparse.Namespace, out: str, clip, fetch, splits, per_shard: int, setup: BeamSetup,
               started: float, started_iso: str) -> int:
    from pipelines import job, plan, tables
    from pipelines.sources import ListingStats

    layout = BuildLayout(out)
    if not args.dry_run:
        if args.overwrite:
            derived = plan.clean_outputs(out)
            if derived:
                print(f"--overwrite: deleted the earlier build in {out} with what was derived from it: "
                      f"{', '.join(derived)}")
        plan.clean_stale(out)
    previous = _previous_build(layout)
    if args.retry_failed:
        the_plan = plan.plan_retry(out, clip, splits, per_shard, previous.get("build_id", ""))
    else:
        extensions = tuple("." + e.strip().lstrip(".").lower() for e in args.extensions.split(",") if e.strip())
        the_plan = plan.plan_build(args.input, out, clip, splits, per_shard, extensions, write=not args.dry_run,
                                   prune=args.prune)
    if the_plan.pruned:
        print(f"--prune: deleted {len(the_plan.pruned)} committed shard(s) that no longer matched the listing or "
              f"depended on one that did: {', '.join(the_plan.pruned)}")
    config = {**resolved(args), "out": out, "beam_args": setup.args, "runner": setup.runner,
              "sources_per_shard": per_shard,
              "hop_seconds": clip.hop_s, "min_clip_seconds": clip.min_clip_s}
    if args.dry_run:
        print(_dry_run_text(config, the_plan, setup))
        return 0
    digest = plan.settings_hash(clip, splits)
    workers = setup.workers
    if the_plan.pending:
        workers = _run_pending(args, out, the_plan, job.JobSettings(out, clip, fetch, digest, args.decode_threads,
                                                                    args.fetch_concurrency), setup, per_shard)
        Store(out).rmtree(layout.work_dir)
    listing = {"sources": the_plan.sources, "skipped_files": the_plan.listing.skipped_files,
               "repeated_uris": the_plan.listing.repeated_uris, "conflicts": the_plan.listing.conflicts}
    if args.retry_failed:
        listing = previous.get("listing", listing)
    notes = ListingStats(conflicts=listing.get("conflicts", {})).conflict_notes()
    totals = tables.write_tables(out, clip.clip_s, notes)
    wall = time.time() - started
    sources_done, seconds_done = _processed(out, list(the_plan.pending))
    run_info = {
        "mode": "retry" if args.retry_failed else ("resume" if the_plan.committed else "build"),
        "started": started_iso, "wall_s": round(wall, 3), "runner": setup.runner, "direct": setup.direct,
        "workers": workers, "shards_processed": len(the_plan.pending),
        "shards_already_committed": len(the_plan.committed), "sources_processed": sources_done,
        "seconds_processed": round(seconds_done, 3),
        "x_realtime_per_core": round(seconds_done / (wall * workers), 2) if workers and seconds_done else None,
    }
    build = {
        "build_id": the_plan.build_id or previous.get("build_id", ""), "version": BUILD_VERSION, "config": config,
        "settings_hash": digest, "versions": versions(), "input": args.input,
        "listing": listing,
        "counts": totals.to_json(), "run": run_info, "runs": [*previous.get("runs", []), run_info],
    }
    write_json(layout.build_json, build)
    print(tables.format_summary(build))
    failed = totals.by_status.get("failed", 0)
    if totals.sources and failed / totals.sources > args.max_failure_rate:
        raise JobFailed(f"{failed} of {totals.sources} sources failed ({failed / totals.sources:.1%} > "
                        f"--max-failure-rate {args.max_failure_rate:g}); reasons in {layout.sources}")
    return 0


def _run_pending(args: argparse.Namespace, out: str, the_plan, settings, setup: BeamSetup,
                 per_shard: int) -> int | None:
    """Run the pipeline over the plan's pending shards, then check that each has its marker (a runner that reports
    success while dropping work fails the build here); returns the number of workers it ran on."""
    from pipelines import job
    from pipelines.progress import ShardProgress

    log = None if args.verbose or not setup.local else _worker_log(out)
    try:
        with worker_output_to(log) as console, _quiet_beam(args.verbose), BeamSession(setup) as session:
            size = job.chunk_size(the_plan.sources, session.workers or 8, per_shard)
            chunks = job.plan_chunks(the_plan.pending, size)
            with ShardProgress(out, chunks, enabled=not args.quiet, stream=console):
                job.run_pipeline(settings, chunks, the_plan.committed, session)
    except UserError:
        raise
    except Exception as err:
        raise JobFailed(f"the pipeline stopped: {_last_line(err)} (Beam worker output: {log or 'above'}; "
                        "re-running resumes from the committed shards)") from err
    store, layout = Store(out), BuildLayout(out)
    missing = [name for name in the_plan.pending if not store.exists(layout.shard_files(name)[1])]
    if missing:
        raise JobFailed(f"the {setup.runner} run finished but {len(missing)} of {len(the_plan.pending)} planned "
                        f"shards were not committed ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}); "
                        "re-running resumes from the committed shards")
    for split in sorted({parse_shard_name(name)[0] for name in the_plan.pending}):
        store.remove_tmp_files(layout.shard_dir(split))  # writes a runner retried after losing a worker
    return session.workers


def _worker_log(out: str) -> str:
    """Where Beam workers' console output goes on a local run: OUT/_work/workers.log (a temp file for remote OUT)."""
    import tempfile

    if is_remote(out):
        return os.path.join(tempfile.gettempdir(), f"n2m-build-workers-{os.getpid()}.log")
    layout = BuildLayout(out)
    os.makedirs(layout.work_dir, exist_ok=True)
    return layout.worker_log


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _previous_build(layout: BuildLayout) -> dict[str, Any]:
    try:
        return read_json(layout.build_json)
    except (OSError, ValueError):
        return {}


def _processed(out: str, names: list[str]) -> tuple[int, float]:
    """(sources, decoded seconds) in the shards this run committed."""
    store, sources, seconds = Store(out), 0, 0.0
    for name in names:
        marker = store.read_json(BuildLayout(out).shard_files(name)[1])
        sources += len(marker["sources"])
        seconds += sum(r["duration_s"] for r in marker["sources"])
    return sources, seconds


def _dry_run_text(config: dict[str, Any], the_plan, setup: BeamSetup) -> str:
    import json

    lines = [json.dumps(config, indent=2, sort_keys=True, default=str),
             f"plan: {the_plan.sources} sources in {len(the_plan.pending) + len(the_plan.committed)} shards "
             f"({len(the_plan.committed)} committed, {len(the_plan.pending)} to build); "
             f"{the_plan.listing.skipped_files} files skipped by extension; runner: {setup.describe()}"]
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_beam(verbose: bool):
    """Beam logs its runner's chatter (and import-time notes on absent GCP clients) at INFO/WARNING on the root
    logger; keep the console to our progress bar and summary unless --verbose."""
    if not verbose:
        logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)

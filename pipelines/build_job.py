"""The ``n2m build`` job: audio files, globs, manifests or URLs -> WebDataset shards + index/sources tables +
build.json, as a function of its typed settings (:class:`BuildSettings`; the command line is :mod:`n2m.pipelines.cli`).

Plan (list the input, group sources into shards), run the Beam pipeline over the shards not yet committed, check that
each planned shard was committed, write the tables and ``build.json``, print a summary; the failure policy
(``max_failure_rate``) is applied last, after the tables are written.

From Python::

    from n2m.pipelines.build_job import BuildSettings, run_build
    run_build(BuildSettings(input="music/", out="out/", clip_seconds=10, quiet=True))
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from n2m.beam import BeamOptions, BeamSession, BeamSetup, beam_setup, worker_output_to
from n2m.config import resolved
from n2m.errors import JobFailed, UserError
from n2m.layout import BuildLayout, parse_shard_name
from n2m.progress import honours_quiet
from n2m.provenance import now_iso, versions
from n2m.schema import BUILD_VERSION
from n2m.storage import Store, is_remote, read_json, write_json

if TYPE_CHECKING:
    from n2m.pipelines.clips import ClipSettings
    from n2m.pipelines.fetch import FetchSettings

_FLAC_RATIO = 0.6  # FLAC bytes / PCM_16 bytes of typical music, for turning shard_size_mb into sources per shard
MAX_CHANNELS = 8  # 7.1 surround


def audio_extensions() -> str:
    """The file name endings a folder listing picks up by default (comma-separated)."""
    from n2m.pipelines.sources import AUDIO_EXTENSIONS

    return ",".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)


@dataclass(frozen=True, kw_only=True)
class BuildSettings(BeamOptions):
    """What ``n2m build`` does: one field per option (``n2m build --help`` says what each means). Each number's own
    range is checked by its flag's type; construction checks what relates fields (a one-line :class:`UserError`)."""

    input: str
    out: str
    extensions: str = field(default_factory=audio_extensions)
    sample_rate: int = 24000
    channels: int = 1
    clip_seconds: float = 30.0
    hop_seconds: float | None = None
    min_clip_seconds: float | None = None
    silence_db: float = -60.0
    max_source_seconds: float = 1200.0
    split: str = "train=0.98,valid=0.01,test=0.01"
    shard_size_mb: float = 256.0
    typical_source_seconds: float = 240.0
    sources_per_shard: int | None = None
    max_source_mb: float = 512.0
    fetch_timeout: float = 30.0
    fetch_deadline: float = 600.0
    fetch_retries: int = 3
    fetch_backoff: float = 1.0
    fetch_concurrency: int = 4
    decode_threads: int = 1
    overwrite: bool = False
    prune: bool = False
    retry_failed: bool = False
    max_failure_rate: float = 1.0
    dry_run: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        hop, minimum = self.hop, self.min_clip
        frames = {flag: round(seconds * self.sample_rate) for flag, seconds in
                  (("--clip-seconds", self.clip_seconds), ("--hop-seconds", hop), ("--min-clip-seconds", minimum))}
        short = [f"{flag} {seconds:g}" for (flag, n), seconds in zip(frames.items(), (self.clip_seconds, hop, minimum))
                 if n < 1]
        checks = [
            (minimum <= self.clip_seconds, "--min-clip-seconds must be at most --clip-seconds"),
            (not short, f"{', '.join(short)} is less than one frame at --sample-rate {self.sample_rate}"),
            (not (self.overwrite and self.retry_failed), "--overwrite and --retry-failed exclude each other"),
            (not (self.prune and self.retry_failed), "--prune and --retry-failed exclude each other"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        self.splits  # noqa: B018 (a bad --split is refused here, before any work)

    @property
    def hop(self) -> float:
        """Seconds between clip starts (``hop_seconds``, default ``clip_seconds``)."""
        return self.hop_seconds if self.hop_seconds is not None else self.clip_seconds

    @property
    def min_clip(self) -> float:
        """The shortest tail kept (``min_clip_seconds``, default half of ``clip_seconds``)."""
        return self.min_clip_seconds if self.min_clip_seconds is not None else self.clip_seconds / 2

    @property
    def clip(self) -> ClipSettings:
        from n2m.pipelines.clips import ClipSettings

        return ClipSettings(self.sample_rate, self.channels, self.clip_seconds, self.hop, self.min_clip,
                            self.silence_db, self.max_source_seconds)

    @property
    def fetch(self) -> FetchSettings:
        from n2m.pipelines.fetch import FetchSettings

        return FetchSettings(int(self.max_source_mb * (1 << 20)), self.fetch_timeout, self.fetch_retries,
                             self.fetch_backoff, self.fetch_deadline)

    @property
    def splits(self) -> tuple[tuple[str, float], ...]:
        from n2m.pipelines.shards import parse_splits

        return parse_splits(self.split)

    @property
    def per_shard(self) -> int:
        """Sources per shard: ``sources_per_shard``, else what ``shard_size_mb`` holds of typical sources."""
        return self.sources_per_shard or max(1, int(self.shard_size_mb * 1e6 // (
            self.typical_source_seconds * self.sample_rate * self.channels * 2 * _FLAC_RATIO)))


@honours_quiet
def run_build(settings: BuildSettings) -> int:
    """Plan, run the Beam pipeline over pending shards, write the tables and build.json, print a summary."""
    started, started_iso = time.time(), now_iso()
    with _quiet_beam(settings.verbose):  # Beam's import chatter (its GCP-client notes are dropped by n2m.beam)
        from n2m.pipelines import job
        from n2m.pipelines.lock import build_lock

    with _quiet_beam(settings.verbose):
        setup = beam_setup(settings, env=job.WORKER_ENV)
    out = settings.out.rstrip("/") if is_remote(settings.out) else os.path.abspath(settings.out)
    if not is_remote(out) and os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out {out} is a file, not a folder")
    with contextlib.nullcontext() if settings.dry_run else build_lock(out):
        return _run_build(settings, out, setup, started, started_iso)


def _run_build(settings: BuildSettings, out: str, setup: BeamSetup, started: float, started_iso: str) -> int:
    from n2m.pipelines import job, plan, tables
    from n2m.pipelines.sources import ListingStats

    clip, fetch, splits, per_shard = settings.clip, settings.fetch, settings.splits, settings.per_shard
    layout = BuildLayout(out)
    if not settings.dry_run:
        if settings.overwrite:
            derived = plan.clean_outputs(out)
            if derived:
                print(f"--overwrite: deleted the earlier build in {out} with what was derived from it: "
                      f"{', '.join(derived)}")
        plan.clean_stale(out)
    previous = _previous_build(layout)
    if settings.retry_failed:
        the_plan = plan.plan_retry(out, clip, splits, per_shard, previous.get("build_id", ""))
    else:
        extensions = tuple("." + e.strip().lstrip(".").lower() for e in settings.extensions.split(",") if e.strip())
        the_plan = plan.plan_build(settings.input, out, clip, splits, per_shard, extensions, write=not settings.dry_run,
                                   prune=settings.prune)
    if the_plan.pruned:
        print(f"--prune: deleted {len(the_plan.pruned)} committed shard(s) that no longer matched the listing or "
              f"depended on one that did: {', '.join(the_plan.pruned)}")
    config = {**resolved(settings), "out": out, "beam_args": setup.args, "runner": setup.runner,
              "sources_per_shard": per_shard,
              "hop_seconds": clip.hop_s, "min_clip_seconds": clip.min_clip_s}
    if settings.dry_run:
        print(_dry_run_text(config, the_plan, setup))
        return 0
    digest = plan.settings_hash(clip, splits)
    workers = setup.workers
    if the_plan.pending:
        workers = _run_pending(settings, out, the_plan, job.JobSettings(out, clip, fetch, digest, settings.decode_threads,
                                                                        settings.fetch_concurrency), setup)
    Store(out).rmtree(layout.work_dir)  # also when a killed run had committed every shard before it could clean up
    listing = {"sources": the_plan.sources, "skipped_files": the_plan.listing.skipped_files,
               "repeated_uris": the_plan.listing.repeated_uris, "conflicts": the_plan.listing.conflicts}
    if settings.retry_failed:
        listing = previous.get("listing", listing)
    notes = ListingStats(conflicts=listing.get("conflicts", {})).conflict_notes()
    totals = tables.write_tables(out, clip.clip_s, notes)
    wall = time.time() - started
    sources_done, seconds_done = _processed(out, list(the_plan.pending))
    run_info = {
        "mode": "retry" if settings.retry_failed else ("resume" if the_plan.committed else "build"),
        "started": started_iso, "wall_s": round(wall, 3), "runner": setup.runner, "direct": setup.direct,
        "workers": workers, "shards_processed": len(the_plan.pending),
        "shards_already_committed": len(the_plan.committed), "sources_processed": sources_done,
        "seconds_processed": round(seconds_done, 3),
        "x_realtime_per_core": round(seconds_done / (wall * workers), 2) if workers and seconds_done else None,
    }
    build = {
        "build_id": the_plan.build_id or previous.get("build_id", ""), "version": BUILD_VERSION, "config": config,
        "settings_hash": digest, "versions": versions(), "input": settings.input,
        "listing": listing,
        "counts": totals.to_json(), "run": run_info, "runs": [*previous.get("runs", []), run_info],
    }
    write_json(layout.build_json, build)
    print(tables.format_summary(build))
    failed = totals.by_status.get("failed", 0)
    if totals.sources and failed / totals.sources > settings.max_failure_rate:
        raise JobFailed(f"{failed} of {totals.sources} sources failed ({failed / totals.sources:.1%} > "
                        f"--max-failure-rate {settings.max_failure_rate:g}); reasons in {layout.sources}")
    return 0


def _run_pending(settings: BuildSettings, out: str, the_plan, job_settings, setup: BeamSetup) -> int | None:
    """Run the pipeline over the plan's pending shards, then check that each has its marker (a runner that reports
    success while dropping work fails the build here); returns the number of workers it ran on."""
    from n2m.pipelines import job
    from n2m.pipelines.progress import ShardProgress

    log = None if settings.verbose or not setup.local else _worker_log(out)
    try:
        with worker_output_to(log) as console, _quiet_beam(settings.verbose), BeamSession(setup) as session:
            size = job.chunk_size(the_plan.sources, session.workers or 8, settings.per_shard)
            chunks = job.plan_chunks(the_plan.pending, size)
            with ShardProgress(out, chunks, enabled=not settings.quiet, stream=console):
                job.run_pipeline(job_settings, chunks, the_plan.committed, session)
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

"""The Beam pipeline of ``n2m build``: shard specs -> staged chunks -> global duplicate check -> committed shards.

::

    pending chunks ─ StageChunk ─ ("shard", (shard, chunk)) | ("pcm", (pcm_sha1, (sid, shard))) records
      (fetch, decode, conform, hash, clip, FLAC;   │
       the chunk's tar members + rows in _work/)   ├─ StagedChunks ─ (shard, chunk) ──────────────────────────┐
                                                   └─ PcmHashes ─ (pcm_sha1, (sid, shard)) ─┐                 │
    committed shards ─ ReadCommittedHashes ─ (pcm_sha1, (sid, shard)) ─────────────────────┤                 │
                                         GroupByKey(pcm) ─┬─ PickCanonical ─ (shard, (sid, canonical)) ───┤
                                                          └─ HashChecked ─ (shard, sid) ──────────────────┤
                                                                                 CoGroupByKey(shard) ─ CommitShard

A chunk is a run of consecutive sources of one shard; chunks are the unit of parallel work (the DirectRunner splits a
stage's input statically across workers, so many small equal chunks balance the cores) while shards stay the unit of
output. Every source is decoded once: its tar members go to the chunk's staged file (tmp -> fsync -> rename, then a
stage marker with its rows and byte range), and only a tiny ``(pcm hash, source id)`` record travels through Beam,
so memory stays flat whatever the corpus size. Once the GroupByKey has seen every hash of the run (and of shards
committed by earlier runs) a shard is assembled by concatenating its sources' staged members in spec order, leaving
duplicates out, committed by rename, and its marker written last. The canonical copy among equal hashes is the one
already committed, else the smallest source id: a pure function of the inputs, so the bytes of a shard never depend
on chunking, worker count, interruptions or timing.

The graph has one sink and only single-output ParDos (StageChunk's two kinds of record are split by two FlatMaps):
Beam's DaskRunner computes only the last transform's graph and gives every consumer of a multi-output ParDo all of its
outputs (n2m.beam). Nothing is dropped silently: CommitShard refuses a shard whose staged chunks do not cover its spec
or whose ok sources were not all seen by the duplicate check, and the driver checks that every planned shard has its
marker after the run.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from n2m.audio import AudioError
from n2m.beam import BeamSession, import_beam
from n2m.layout import BuildLayout, parse_shard_name
from n2m.pipelines import clips
from n2m.pipelines.fetch import FetchError, FetchSettings, fetch
from n2m.pipelines.shards import ShardSpec, TarAssembler, sample_bytes, sample_json
from n2m.pipelines.sources import Source
from n2m.schema import clip_key
from n2m.storage import Store

beam = import_beam()
LOG = logging.getLogger(__name__)
NAMESPACE = "n2m_build"
PCM_TAG = "pcm"
SHARD_TAG = "shard"
FILTER_REASONS = frozenset({"too_short", "silent"})  # status "filtered"; "" is ok; "duplicate_pcm" is duplicate
DUPLICATE_REASON = "duplicate_pcm"


def status_of(reason: str) -> str:
    """Source status from its reason: ok | filtered | duplicate | failed."""
    if not reason:
        return "ok"
    if reason in FILTER_REASONS:
        return "filtered"
    return "duplicate" if reason == DUPLICATE_REASON else "failed"


@dataclass(frozen=True)
class JobSettings:
    """What the Beam workers need (picklable). ``threads``: sources decoded at once per worker;
    ``fetch_concurrency``: reads in flight per worker."""

    out: str
    clip: clips.ClipSettings
    fetch: FetchSettings
    settings_hash: str
    threads: int = 1
    fetch_concurrency: int = 4


# ---------------------------------------------------------------------------------------------------------------------
# Chunks: the unit of parallel work (their files live in OUT/_work/stage, n2m.layout.BuildLayout.stage_tar)


def chunk_name(shard: str, start: int, stop: int) -> str:
    """``{shard}_{start:06d}-{stop:06d}``: sources ``[start, stop)`` of a shard's spec."""
    return f"{shard}_{start:06d}-{stop:06d}"


def parse_chunk_name(chunk: str) -> tuple[str, int, int]:
    shard, _, bounds = chunk.rpartition("_")
    start, stop = bounds.split("-")
    return shard, int(start), int(stop)


def chunk_size(sources: int, workers: int, per_shard: int, per_worker: int = 16) -> int:
    """Sources per chunk: about ``per_worker`` chunks per worker over the whole plan, at most a shard, at least 1.

    It depends only on the plan (not on what is left to do), so a resumed run finds the chunks it staged before.
    """
    return max(1, min(per_shard, -(-sources // (per_worker * max(workers, 1)))))


def plan_chunks(sizes: dict[str, int], size: int) -> list[str]:
    """Cut pending shards (name -> number of sources) into chunks of ``size`` consecutive sources."""
    return [chunk_name(shard, start, min(start + size, n)) for shard, n in sizes.items() for start in range(0, n, size)]


# ---------------------------------------------------------------------------------------------------------------------
# One source


def ordered(pool: Executor, fn, items: Iterable[Any], depth: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``pool`` with at most ``depth`` calls in flight, results in input order."""
    window: deque = deque()
    for item in items:
        window.append(pool.submit(fn, item))
        if len(window) >= depth:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def _fetch(source: Source, settings: FetchSettings) -> tuple[Source, bytes | Exception]:
    if source.error:
        return source, FetchError(source.reason or "bad_manifest_row", source.error)
    try:
        return source, fetch(source.uri, settings)
    except (FetchError, AudioError) as err:
        return source, err
    except Exception as err:  # noqa: BLE001 - one bad source never stops the job
        return source, FetchError("fetch_error", f"{source.uri}: {type(err).__name__}: {err}")


def _process(item: tuple[Source, bytes | Exception], settings: clips.ClipSettings) -> tuple[Source, clips.Processed]:
    source, data = item
    if isinstance(data, Exception):
        return source, clips.Processed(reason=getattr(data, "reason", "fetch_error"), message=str(data))
    try:
        return source, clips.process(data, settings, name=source.uri)
    except AudioError as err:
        return source, clips.Processed(reason=err.reason, message=err.message)
    except Exception as err:  # noqa: BLE001 - a decoder bug on one file must not stop the job
        LOG.warning("unexpected error on %s:\n%s", source.uri, traceback.format_exc())
        return source, clips.Processed(reason="internal_error", message=f"{type(err).__name__}: {err}")


def join_notes(*parts: str) -> str:
    """A sources.parquet ``message``: the failure (if any), then what the listing and the decoder noted."""
    return "; ".join(p for p in parts if p)


def source_row(source: Source, split: str, processed: clips.Processed, settings: clips.ClipSettings,
               shard: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, bytes]]]]:
    """The sources.parquet row (plus ``text``, ``silent_clips``, ``clip_rows``) and the tar samples of one source."""
    sid = source.source_id
    samples, clip_rows = [], []
    for clip in processed.clips:
        key = clip_key(sid, clip.index)
        common = {"key": key, "source_id": sid, "source_uri": source.uri, "clip_index": clip.index, "split": split,
                  "offset_s": clip.offset_s, "duration_s": clip.duration_s, "padded": clip.padded,
                  "sample_rate": settings.sample_rate, "channels": settings.channels, "rms_db": clip.rms_db}
        clip_rows.append({**common, "shard": f"{shard}.tar"})
        doc = sample_json({**common, "meta": source.meta, "text": list(source.text)})
        samples.append((key, {"flac": clip.flac, "json": doc}))
    row = {
        "source_id": sid, "source_uri": source.uri, "status": status_of(processed.reason),
        "reason": processed.reason, "message": join_notes(processed.message, processed.note, *source.notes),
        "duration_s": processed.duration_s, "clips": len(processed.clips), "split": split,
        "pcm_sha1": processed.pcm_sha1, "duplicate_of": "",
        "meta_json": json.dumps(source.meta, sort_keys=True, ensure_ascii=False, allow_nan=False),
        "text": list(source.text),
        "silent_clips": processed.silent_clips, "decoder": processed.decoder, "clip_rows": clip_rows,
    }
    return row, samples


# ---------------------------------------------------------------------------------------------------------------------
# Beam transforms


class StageChunk(beam.DoFn):
    """Chunk name -> staged members + stage marker (reused when a previous run staged the same spec and chunk).

    Outputs ``("pcm", (pcm_sha1, (source_id, shard, False)))`` per ok source, then ``("shard", (shard, chunk))``.
    """

    def __init__(self, job: JobSettings):
        self.job = job

    def setup(self) -> None:
        self.store, self.layout = Store(self.job.out), BuildLayout(self.job.out)
        self.counters = {s: beam.metrics.Metrics.counter(NAMESPACE, f"sources_{s}") for s in ("ok", "failed", "filtered")}
        self.clip_counter = beam.metrics.Metrics.counter(NAMESPACE, "clips_staged")
        self.seconds = beam.metrics.Metrics.counter(NAMESPACE, "input_seconds")

    def process(self, chunk: str) -> Iterator[Any]:
        layout = self.layout
        shard, start, stop = parse_chunk_name(chunk)
        plan = self.store.read_json(layout.plan(shard))
        rows = None
        if self.store.exists(layout.stage_marker(chunk)) and self.store.exists(layout.stage_tar(chunk)):
            staged = self.store.read_json(layout.stage_marker(chunk))
            if staged.get("spec_hash") == plan["spec_hash"]:
                rows = staged["sources"]
        if rows is None:
            spec = ShardSpec.from_json(plan)
            rows = self._stage(spec, spec.sources[start:stop], chunk, plan["spec_hash"])
        for row in rows:
            self.counters[row["status"]].inc()
            self.clip_counter.inc(row["clips"])
            self.seconds.inc(int(round(row["duration_s"])))
            if row["status"] == "ok":
                yield PCM_TAG, (row["pcm_sha1"], (row["source_id"], shard, False))
        yield SHARD_TAG, (shard, chunk)

    def _stage(self, spec: ShardSpec, sources: tuple[Source, ...], chunk: str, spec_hash: str) -> list[dict]:
        job, rows, offset = self.job, [], 0
        with (
            ThreadPoolExecutor(job.fetch_concurrency, thread_name_prefix="fetch") as fetch_pool,
            ThreadPoolExecutor(job.threads, thread_name_prefix="decode") as work_pool,
            self.store.atomic_writer(self.layout.stage_tar(chunk)) as handle,
        ):
            fetched = ordered(fetch_pool, lambda s: _fetch(s, job.fetch), sources, job.fetch_concurrency)
            for source, processed in ordered(work_pool, lambda i: _process(i, job.clip), fetched, job.threads):
                row, samples = source_row(source, spec.split, processed, job.clip, spec.name)
                members = b"".join(sample_bytes(key, files) for key, files in samples)
                handle.write(members)
                row["range"] = [offset, len(members)]
                offset += len(members)
                rows.append(row)
        self.store.write_json(self.layout.stage_marker(chunk), {"spec_hash": spec_hash, "sources": rows}, indent=1)
        return rows


def committed_hashes(name: str, out: str) -> Iterator[tuple[str, tuple[str, str, bool]]]:
    """``(pcm_sha1, (source_id, shard, True))`` of the ok sources of a shard committed earlier."""
    marker = Store(out).read_json(BuildLayout(out).shard_files(name)[1])
    for row in marker["sources"]:
        if row["status"] == "ok":
            yield row["pcm_sha1"], (row["source_id"], name, True)


def records(element: tuple[str, Any], tag: str) -> Iterator[Any]:
    """The payload of a ``(tag, payload)`` record of StageChunk when its tag is ``tag``."""
    if element[0] == tag:
        yield element[1]


def hash_checked(element: tuple[str, Iterable[tuple[str, str, bool]]]) -> Iterator[tuple[str, str]]:
    """One PCM hash group -> ``(shard, source id)`` for each member staged by this run: its duplicate check is done."""
    for sid, shard, committed in set(element[1]):
        if not committed:
            yield shard, sid


def pick_duplicates(element: tuple[str, Iterable[tuple[str, str, bool]]]) -> Iterator[tuple[str, tuple[str, str]]]:
    """One PCM hash group -> ``(shard, (duplicate source id, canonical source id))`` for each non-canonical member.

    Canonical: a member already committed (its clips exist), else the smallest source id. Committed members are
    never reported (their shards are final).
    """
    _, members = element
    ranked = sorted(set(members), key=lambda m: (not m[2], m[0]))
    canonical = ranked[0][0]
    for sid, shard, committed in ranked[1:]:
        if not committed and sid != canonical:
            yield shard, (sid, canonical)


class CommitShard(beam.DoFn):
    """``(shard, {"staged": [chunks], "dups": [(sid, canonical)], "checked": [sid]})`` -> final tar + marker (written
    last). Refuses (raises) when the chunks do not cover the shard's spec or an ok source missed the duplicate check."""

    def __init__(self, job: JobSettings):
        self.job = job

    def setup(self) -> None:
        self.store, self.layout = Store(self.job.out), BuildLayout(self.job.out)
        self.clips = beam.metrics.Metrics.counter(NAMESPACE, "clips_committed")
        self.duplicates = beam.metrics.Metrics.counter(NAMESPACE, "sources_duplicate")
        self.shards = beam.metrics.Metrics.counter(NAMESPACE, "shards_committed")

    def process(self, element: tuple[str, dict[str, list]]) -> Iterator[str]:
        shard, grouped = element
        store, layout = self.store, self.layout
        tar_path, marker_path = layout.shard_files(shard)
        if store.exists(marker_path):
            return
        duplicates, checked = dict(grouped["dups"]), set(grouped["checked"])
        chunks = sorted(set(grouped["staged"]), key=lambda c: parse_chunk_name(c)[1])
        plan = store.read_json(layout.plan(shard))
        bounds = [parse_chunk_name(c)[1:] for c in chunks]
        if not chunks or [b[0] for b in bounds] != [0, *(b[1] for b in bounds[:-1])] \
                or bounds[-1][1] != len(plan["sources"]):
            raise RuntimeError(f"shard {shard}: staged chunks {chunks} do not cover its {len(plan['sources'])} sources")
        staged = [(chunk, store.read_json(layout.stage_marker(chunk))["sources"]) for chunk in chunks]
        unchecked = [r["source_id"] for _, rows in staged for r in rows if r["status"] == "ok"
                     and r["source_id"] not in checked]
        if unchecked:
            raise RuntimeError(f"shard {shard}: the duplicate check never saw {len(unchecked)} of its sources "
                               f"({unchecked[0]}...): the runner lost records")
        sources, index = [], []
        with store.atomic_writer(tar_path) as handle:
            tar = TarAssembler(handle)
            for chunk, rows in staged:
                with store.open_read(layout.stage_tar(chunk)) as staged:
                    for row in rows:
                        offset, length = row.pop("range")
                        clip_rows = row.pop("clip_rows")
                        if row["source_id"] in duplicates:
                            canonical = duplicates[row["source_id"]]
                            row.update(status="duplicate", reason=DUPLICATE_REASON, duplicate_of=canonical, clips=0,
                                       message=join_notes(f"same audio as source {canonical}", row["message"]))
                            self.duplicates.inc()
                        elif length:
                            staged.seek(offset)
                            tar.write(staged.read(length))
                            index.extend(clip_rows)
                        sources.append(row)
            stats = tar.close()
        split, number = parse_shard_name(shard)
        store.write_json(marker_path, {
            "shard": f"{shard}.tar", "split": split, "index": number, "spec_hash": plan["spec_hash"],
            "settings_hash": self.job.settings_hash, "retry": bool(plan.get("retry")), "tar": stats,
            "sources": sources, "clips": index,
        }, indent=1)
        for chunk in chunks:
            store.remove(layout.stage_marker(chunk))
            store.remove(layout.stage_tar(chunk))
        self.clips.inc(len(index))
        self.shards.inc()
        yield shard


# ---------------------------------------------------------------------------------------------------------------------
# The pipeline


def build_pipeline(p: beam.Pipeline, job: JobSettings, chunks: list[str], committed: list[str]) -> None:
    """Add the build's transforms to ``p`` (see the module docstring for the graph)."""
    staged = (
        p
        | "PendingChunks" >> beam.Create(chunks)
        | "DecodeAndStage" >> beam.ParDo(StageChunk(job))
    )
    hashes = [staged | "PcmHashes" >> beam.FlatMap(records, PCM_TAG)]
    if committed:
        hashes.append(
            p
            | "CommittedShards" >> beam.Create(committed)
            | "ReadCommittedHashes" >> beam.FlatMap(committed_hashes, job.out)
        )
    groups = (
        hashes
        | "AllHashes" >> beam.Flatten()
        | "GroupByPcm" >> beam.GroupByKey()
    )
    _ = (
        {
            "staged": staged | "StagedChunks" >> beam.FlatMap(records, SHARD_TAG),
            "dups": groups | "PickCanonical" >> beam.FlatMap(pick_duplicates),
            "checked": groups | "HashChecked" >> beam.FlatMap(hash_checked),
        }
        | "JoinByShard" >> beam.CoGroupByKey()
        | "CommitShards" >> beam.ParDo(CommitShard(job))
    )


def run_pipeline(job: JobSettings, chunks: list[str], committed: list[str], session: BeamSession) -> None:
    """Build and run the pipeline to completion on the session's runner."""
    session.run(lambda p: build_pipeline(p, job, chunks, committed), items=len(chunks))


# glibc gives every thread its own malloc arena, and each arena keeps tens of MB of freed decode buffers: capping the
# arenas halved the peak RSS of a DirectRunner worker (~700 -> ~330 MB on 2-minute stereo sources) at no measured
# speed cost. Local worker processes (DirectRunner, local Dask cluster) inherit it; an explicit setting wins.
WORKER_ENV = {"MALLOC_ARENA_MAX": "2"}

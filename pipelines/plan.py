"""Driver-side work before the pipeline runs: clean up interrupted writes, list sources, plan shards, pick the pending.

A shard is committed when its tar and marker both exist. Everything else left by an interrupted run is either
removed here (tmp files, tars without a marker) or reused (a staged shard whose stage marker matches its spec).
Committed shards are checked against the new plan: a shard whose spec changed (other inputs or settings) is a user
error, never silently mixed into the build.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from n2m.errors import UserError
from n2m.schema import BUILD_VERSION, BuildLayout
from pipelines.clips import ClipSettings
from pipelines.job import WORK_DIR, final_paths, parse_chunk_name, plan_path, stage_dir, stage_marker, stage_tar
from pipelines.shards import ShardSpec, parse_shard_name, plan_shards
from pipelines.sources import ListingStats, Source, iter_sources
from pipelines.storage import Store, join
from pipelines.tables import committed_shards, iter_current

NOT_RETRIED = frozenset({"bad_manifest_row"})  # failures a retry cannot fix (the manifest itself is wrong)


def settings_hash(clip: ClipSettings, splits: tuple[tuple[str, float], ...]) -> str:
    """Hash of everything that decides shard contents besides the sources themselves."""
    text = json.dumps({"version": BUILD_VERSION, "clip": clip.to_json(), "splits": splits}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass
class Plan:
    """Shards to process now (``pending``: name -> number of sources), shards already committed, what the listing
    saw."""

    pending: dict[str, int] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)
    sources: int = 0
    build_id: str = ""
    listing: ListingStats = field(default_factory=ListingStats)


def clean_outputs(out: str) -> None:
    """``--overwrite``: remove every output of an earlier build under OUT."""
    store, layout = Store(out), BuildLayout(out)
    store.rmtree(store.path("shards"))
    store.rmtree(store.path(WORK_DIR))
    for path in (layout.index, layout.sources, layout.build_json):
        store.remove(path)


def clean_stale(out: str) -> int:
    """Remove what interrupted runs left behind; returns the number of files removed."""
    store, layout = Store(out), BuildLayout(out)
    removed = 0
    for split in store.listdir(store.path("shards")):
        folder = layout.shard_dir(split)
        removed += store.remove_tmp_files(folder)
        files = set(store.listdir(folder))
        for file in files:
            stem, ext = file.rsplit(".", 1) if "." in file else (file, "")
            partner = f"{stem}.json" if ext == "tar" else f"{stem}.tar"
            if ext in ("tar", "json") and partner not in files:  # a tar never committed, or a marker without its tar
                store.remove(join(folder, file))
                removed += 1
    store.rmtree(join(out, WORK_DIR, "plan"))
    staged = stage_dir(out)
    removed += store.remove_tmp_files(staged)
    for file in store.listdir(staged):
        chunk = file.rsplit(".", 1)[0]
        if not file.endswith((".tar", ".json")):
            continue
        committed = store.exists(final_paths(out, parse_chunk_name(chunk)[0])[1])
        complete = store.exists(stage_tar(out, chunk)) and store.exists(stage_marker(out, chunk))
        if committed or not complete:
            store.remove(join(staged, file))
            removed += 1
    return removed


def _write_plan(store: Store, out: str, spec: ShardSpec, digest: str) -> None:
    obj = spec.to_json(digest)
    store.write_bytes(plan_path(out, spec.name), json.dumps(obj, sort_keys=True).encode())


def plan_build(
    src: str, out: str, clip: ClipSettings, splits: tuple[tuple[str, float], ...], per_shard: int,
    extensions: tuple[str, ...], write: bool = True,
) -> Plan:
    """List ``src`` and plan its shards; write plan files of pending shards (unless ``write`` is False)."""
    store = Store(out)
    digest = settings_hash(clip, splits)
    plan = Plan()
    done = set(committed_shards(store, BuildLayout(out)))
    build = hashlib.sha1(digest.encode())
    sources = iter_sources(src, extensions=extensions, exclude=(out,), stats=plan.listing)
    for spec in plan_shards(sources, splits, per_shard):
        spec_hash = spec.spec_hash(digest)
        build.update(spec_hash.encode())
        plan.sources += len(spec.sources)
        if spec.name in done:
            marker = store.read_json(final_paths(out, spec.name)[1])
            if marker.get("spec_hash") != spec_hash:
                raise UserError(
                    f"{out} holds shard {spec.name} built from other inputs or settings; "
                    "re-run with --overwrite or choose another --output"
                )
            plan.committed.append(spec.name)
        else:
            if write:
                _write_plan(store, out, spec, digest)
            plan.pending[spec.name] = len(spec.sources)
    plan.build_id = build.hexdigest()[:16]
    return plan


def _failed_sources(out: str) -> Iterator[Source]:
    store, layout = Store(out), BuildLayout(out)
    for _, rows, _ in iter_current(store, layout):
        for row in rows:
            if row["status"] == "failed" and row["reason"] not in NOT_RETRIED:
                yield Source(row["source_uri"], json.loads(row["meta_json"] or "{}"), tuple(row.get("text") or ()))


def plan_retry(out: str, clip: ClipSettings, splits: tuple[tuple[str, float], ...], per_shard: int,
               build_id: str) -> Plan:
    """Plan new shards (numbered after the last of each split) holding the sources whose latest attempt failed."""
    store, layout = Store(out), BuildLayout(out)
    digest = settings_hash(clip, splits)
    committed = committed_shards(store, layout)
    if not committed:
        raise UserError(f"--retry-failed: {out} holds no committed shards to retry")
    next_index: dict[str, int] = {}
    for name in committed:
        split, index = parse_shard_name(name)
        next_index[split] = max(next_index.get(split, 0), index + 1)
        marker = store.read_json(final_paths(out, name)[1])
        if marker.get("settings_hash") != digest:
            raise UserError(f"--retry-failed needs the settings of the build in {out} (shard {name} differs)")
    plan = Plan(committed=committed, build_id=build_id)
    for spec in plan_shards(_failed_sources(out), splits, per_shard, start=next_index, retry=True):
        _write_plan(store, out, spec, digest)
        plan.pending[spec.name] = len(spec.sources)
        plan.sources += len(spec.sources)
    return plan

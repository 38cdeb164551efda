"""Driver-side work before the pipeline runs: clean up interrupted writes, list sources, plan shards, pick the pending.

A shard is committed when its tar and marker both exist. Everything else left by an interrupted run is either
removed here (tmp files, tars without a marker) or reused (a staged shard whose stage marker matches its spec).
Committed shards are checked against the new plan: a shard whose spec changed (other inputs or settings) or that the
listing no longer produces (its inputs were deleted) is a user error, never silently mixed into the build.
``--prune`` deletes such shards instead (with the shards that depend on them) and rebuilds what the listing still
holds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from n2m.errors import UserError
from n2m.layout import BuildLayout, committed_shards
from n2m.pipelines.clips import ClipSettings
from n2m.pipelines.job import parse_chunk_name
from n2m.pipelines.shards import ShardSpec, plan_shards
from n2m.pipelines.sources import ListingStats, Source, iter_sources
from n2m.pipelines.tables import iter_current
from n2m.schema import BUILD_VERSION
from n2m.storage import Store, join

NOT_RETRIED = frozenset({"bad_manifest_row", "bad_file_name", "symlink_loop", "listing_error"})  # fixed by re-listing
DERIVED_DIRS = ("labels", "embeddings")  # label sets and embedding caches computed from a build's shards


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
    pruned: list[str] = field(default_factory=list)


def clean_outputs(out: str) -> list[str]:
    """``--overwrite``: remove every output of an earlier build under OUT, and what was derived from it (label sets,
    embedding caches), which must not be mixed with the new build. Returns the derived folders removed."""
    store, layout = Store(out), BuildLayout(out)
    removed = [join(name, entry) for name in DERIVED_DIRS for entry in store.listdir(store.path(name))]
    for folder in (layout.shards_root, layout.work_dir, *(store.path(name) for name in DERIVED_DIRS)):
        store.rmtree(folder)
    for path in (layout.index, layout.sources, layout.build_json):
        store.remove(path)
    return removed


def clean_stale(out: str) -> int:
    """Remove what interrupted runs left behind; returns the number of files removed."""
    store, layout = Store(out), BuildLayout(out)
    removed = 0
    for split in store.listdir(layout.shards_root):
        folder = layout.shard_dir(split)
        removed += store.remove_tmp_files(folder)
        files = set(store.listdir(folder))
        for file in files:
            stem, ext = file.rsplit(".", 1) if "." in file else (file, "")
            partner = f"{stem}.json" if ext == "tar" else f"{stem}.tar"
            if ext in ("tar", "json") and partner not in files:  # a tar never committed, or a marker without its tar
                store.remove(join(folder, file))
                removed += 1
    store.rmtree(layout.plan_dir)
    staged = layout.stage_dir
    removed += store.remove_tmp_files(staged)
    for file in store.listdir(staged):
        chunk = file.rsplit(".", 1)[0]
        if not file.endswith((".tar", ".json")):
            continue
        committed = store.exists(layout.shard_files(parse_chunk_name(chunk)[0])[1])
        complete = store.exists(layout.stage_tar(chunk)) and store.exists(layout.stage_marker(chunk))
        if committed or not complete:
            store.remove(join(staged, file))
            removed += 1
    return removed


def _write_plan(store: Store, out: str, spec: ShardSpec, digest: str) -> None:
    obj = spec.to_json(digest)
    store.write_bytes(BuildLayout(out).plan(spec.name), json.dumps(obj, sort_keys=True).encode())


def plan_build(
    src: str, out: str, clip: ClipSettings, splits: tuple[tuple[str, float], ...], per_shard: int,
    extensions: tuple[str, ...], write: bool = True, prune: bool = False,
) -> Plan:
    """List ``src`` and plan its shards; write plan files of pending shards (unless ``write`` is False).

    Committed shards that no longer match the listing (changed spec, or not produced at all) are refused, or with
    ``prune`` deleted (see :func:`_prune`) and rebuilt when the listing still has them. Zero sources is a user error.
    """
    store = Store(out)
    digest = settings_hash(clip, splits)
    plan = Plan()
    done = {shard.name for shard in committed_shards(out)}
    build = hashlib.sha1(digest.encode())
    sources = iter_sources(src, extensions=extensions, exclude=(out,), stats=plan.listing)
    changed: list[str] = []
    for spec in plan_shards(sources, splits, per_shard):
        spec_hash = spec.spec_hash(digest)
        build.update(spec_hash.encode())
        plan.sources += len(spec.sources)
        if spec.name in done:
            marker = store.read_json(BuildLayout(out).shard_files(spec.name)[1])
            if marker.get("spec_hash") == spec_hash:
                plan.committed.append(spec.name)
                continue
            if marker.get("settings_hash") != digest:
                raise UserError(f"{out} holds shard {spec.name} built with other settings; re-run with --overwrite "
                                "or choose another --out")
            changed.append(spec.name)
        if write:
            _write_plan(store, out, spec, digest)
        plan.pending[spec.name] = len(spec.sources)
    if plan.sources == 0:
        skipped = plan.listing.skipped_files
        hint = (f" ({skipped} files skipped by extension; --extensions picks the file endings a folder listing takes)"
                if skipped else "")
        raise UserError(f"input {src} lists no sources{hint}")
    gone = sorted(name for name in done - set(plan.committed) - set(changed) if not _is_retry(store, out, name))
    if changed or gone:
        if not prune:
            names = ", ".join((changed + gone)[:5]) + (", ..." if len(changed) + len(gone) > 5 else "")
            raise UserError(f"{out} holds {len(changed) + len(gone)} committed shard(s) that no longer match the "
                            f"input listing ({names}): inputs were removed or changed. Re-run with --prune to delete "
                            "them and rebuild from the current listing, or with --overwrite to start afresh")
        if write:
            plan.pruned = _prune(store, out, changed + gone)
            rebuild = set(plan.committed) & set(plan.pruned)
            for spec in plan_shards(iter_sources(src, extensions=extensions, exclude=(out,)), splits, per_shard):
                if spec.name in rebuild:  # a second listing: specs of committed shards are not kept in memory
                    _write_plan(store, out, spec, digest)
                    plan.pending[spec.name] = len(spec.sources)
            plan.committed = [n for n in plan.committed if n not in rebuild]
    plan.build_id = build.hexdigest()[:16]
    return plan


def _is_retry(store: Store, out: str, name: str) -> bool:
    return bool(store.read_json(BuildLayout(out).shard_files(name)[1]).get("retry"))


def _prune(store: Store, out: str, stale: list[str]) -> list[str]:
    """Delete committed shards: ``stale`` ones, then any other committed shard that depends on a deleted source (a
    duplicate whose canonical copy was deleted, or a ``--retry-failed`` attempt of a deleted source), until none is
    left. Returns every shard deleted."""
    markers = {shard.name: store.read_json(shard.marker) for shard in committed_shards(out)}
    doomed = set(stale)
    while True:
        deleted = {row["source_id"] for name in doomed for row in markers[name]["sources"]}
        more = {name for name, marker in markers.items() if name not in doomed and any(
            row["duplicate_of"] in deleted or (marker.get("retry") and row["source_id"] in deleted)
            for row in marker["sources"])}
        if not more:
            break
        doomed |= more
    for name in sorted(doomed):
        tar, marker = BuildLayout(out).shard_files(name)
        store.remove(marker)  # marker first: a crash in between leaves an uncommitted tar, cleaned on the next run
        store.remove(tar)
    return sorted(doomed)


def _failed_sources(out: str) -> Iterator[Source]:
    for _, rows, _ in iter_current(out):
        for row in rows:
            if row["status"] == "failed" and row["reason"] not in NOT_RETRIED:
                yield Source(row["source_uri"], json.loads(row["meta_json"] or "{}"), tuple(row.get("text") or ()))


def plan_retry(out: str, clip: ClipSettings, splits: tuple[tuple[str, float], ...], per_shard: int,
               build_id: str) -> Plan:
    """Plan new shards (numbered after the last of each split) holding the sources whose latest attempt failed."""
    store = Store(out)
    digest = settings_hash(clip, splits)
    committed = committed_shards(out)
    if not committed:
        raise UserError(f"--retry-failed: {out} holds no committed shards to retry")
    next_index: dict[str, int] = {}
    for shard in committed:
        next_index[shard.split] = max(next_index.get(shard.split, 0), shard.index + 1)
        if store.read_json(shard.marker).get("settings_hash") != digest:
            raise UserError(f"--retry-failed needs the settings of the build in {out} (shard {shard.name} differs)")
    plan = Plan(committed=[shard.name for shard in committed], build_id=build_id)
    for spec in plan_shards(_failed_sources(out), splits, per_shard, start=next_index, retry=True):
        _write_plan(store, out, spec, digest)
        plan.pending[spec.name] = len(spec.sources)
        plan.sources += len(spec.sources)
    return plan

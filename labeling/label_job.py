"""The ``n2m label`` job as a function of its typed settings (:class:`LabelJobSettings`; the command line is
:mod:`n2m.labeling.cli`): the driver around the Beam job (:mod:`n2m.labeling.job`), the summary and ``manifest.json``.

From Python::

    from n2m.labeling.label_job import LabelJobSettings, run_label
    run_label(LabelJobSettings(build="out/", vocab=["vocab/aspects.parquet"], joint_model="models/clap", name="v1"))
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from n2m.beam import BeamOptions, BeamSession, beam_setup, worker_output_to
from n2m.config import resolved
from n2m.errors import JobFailed, ShardDamaged, UserError
from n2m.labeling.vocabset import open_vocabularies
from n2m.layout import BuildLayout, build_id, verify_shard
from n2m.names import check_name
from n2m.progress import honours_quiet
from n2m.provenance import now_iso, versions
from n2m.schema import LABELS_VERSION
from n2m.storage import Store, exists, is_remote, read_bytes, write_json

if TYPE_CHECKING:
    from n2m.labeling.job import LabelSettings


@dataclass(frozen=True, kw_only=True)
class LabelJobSettings(BeamOptions):
    """What ``n2m label`` does: one field per option (``n2m label --help`` says what each means). ``vocab``: the
    vocabulary files; ``name``: the label set, written to ``BUILD/labels/NAME/``."""

    build: str
    vocab: list[str]
    joint_model: str
    name: str
    k: int = 10
    k_prime: str = "3,6"
    seed: int = 0
    batch_size: int = 8
    text_batch: int = 64
    device: str = "cpu"
    splits: str = ""
    entry_block: int = 32_768
    min_tail_s: float | None = None
    overwrite: bool = False
    dry_run: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        check_name(self.name, "--name")


def _identity(settings: LabelSettings, splits: list[str]) -> dict:
    return {"build_id": settings.build_id, "model_id": settings.model_id,
            "vocabs": [[v.name, v.cache_id] for v in settings.vocabs],
            "k": settings.k, "k_prime": list(settings.k_prime), "seed": settings.seed, "splits": splits,
            "min_tail_s": settings.min_tail_s, "labels_version": LABELS_VERSION}


def _job_identity(folder: str) -> dict | None:
    path = f"{folder}/job.json"
    return json.loads(read_bytes(path)).get("identity") if exists(path) else None


def claim_label_dir(layout: BuildLayout, name: str, identity: dict, overwrite: bool) -> str:
    """The folder this run writes: ``labels/NAME`` itself when it is new or holds the same settings (resume), else
    (with ``overwrite``) the hidden sibling ``labels/.NAME.rebuild`` that :func:`swap_in` moves into place at the end."""
    final = layout.label_dir(name)
    if exists(final):
        previous = _job_identity(final)
        if previous == identity:
            return final
        if not overwrite:
            if previous is None:
                raise UserError(f"{final} exists but was not made by n2m label; pick another --name or pass --overwrite")
            if previous.get("build_id") != identity["build_id"]:
                raise UserError(f"label set {name!r} was made from build {previous.get('build_id') or '?'}, not from "
                                f"this build ({identity['build_id'] or '?'}); pass --overwrite to relabel it")
            raise UserError(f"label set {name!r} exists with other settings ({final}); pick another --name or pass "
                            "--overwrite")
        folder = f"{layout.labels_root}/.{name}.rebuild"
        if _job_identity(folder) != identity:  # a rebuild with other settings was interrupted: start it afresh
            remove_work_dir(folder, layout)
    else:
        folder = final
    if _job_identity(folder) != identity:
        write_json(f"{folder}/job.json", {"identity": identity, "started": now_iso()})
    return folder


def swap_in(layout: BuildLayout, name: str, folder: str) -> None:
    """Replace ``labels/NAME`` by the completed rebuild ``folder`` (two renames; the old set is deleted last)."""
    final = layout.label_dir(name)
    if folder == final:
        return
    old = f"{layout.labels_root}/.{name}.old"
    store = Store(final)
    remove_work_dir(old, layout)
    if store.exists(final):
        store.move_dir(final, old)
    store.move_dir(folder, final)
    remove_work_dir(old, layout)


def remove_work_dir(folder: str, layout: BuildLayout) -> None:
    """Delete a hidden work folder (``labels/.NAME...``) of a label set, and nothing else (a local path or a URI)."""
    root = layout.labels_root.rstrip("/")
    name = folder.rstrip("/").rsplit("/", 1)[-1]
    if folder.rstrip("/") != f"{root}/{name}" or not name.startswith(".") or name in (".", ".."):
        raise ValueError(f"refusing to delete {folder}: not a hidden work folder directly inside {root}")
    Store(folder).rmtree(folder)


@honours_quiet
def run_label(settings: LabelJobSettings) -> int:
    """Label every committed shard of ``settings.build``; write ``labels/NAME`` (swapped in once complete) and its
    ``manifest.json``; print a summary. A shard that produced no labels fails the job (re-running resumes)."""
    from n2m.clap import ClapEmbedder
    from n2m.labeling.job import (
        LabelSettings,
        assign_pipeline,
        embed_vocabularies,
        global_counts,
        parse_k_prime,
        score_pipeline,
        shard_refs,
        text_cache_path,
        threads_per_worker,
    )

    started = time.perf_counter()
    layout = BuildLayout(settings.build)
    if not exists(layout.shards_root):
        raise UserError(f"--build {settings.build}: no shards/ folder (run n2m build first)")
    splits = [s.strip() for s in settings.splits.split(",") if s.strip()]
    shards = shard_refs(settings.build, splits)
    if not shards:
        raise UserError(f"--build {settings.build}: no committed shards{' in ' + ','.join(splits) if splits else ''}")
    vocabs = open_vocabularies(settings.vocab)
    k_prime = parse_k_prime(settings.k_prime)
    kwargs = {} if settings.min_tail_s is None else {"min_tail_s": settings.min_tail_s}
    embedder = ClapEmbedder.from_pretrained(settings.joint_model, device=settings.device, **kwargs)
    embed_dir = layout.embedding_dir(embedder.model_id[:16])
    setup = beam_setup(settings, max_workers=len(shards))
    labelling = LabelSettings(
        build=settings.build, name=settings.name, out_dir=layout.label_dir(settings.name),
        build_id=build_id(settings.build),
        model=str(Path(settings.joint_model).resolve()), model_id=embedder.model_id,
        vocabs=tuple(vocabs), text_caches=tuple(text_cache_path(embed_dir, v) for v in vocabs), k=settings.k,
        k_prime=tuple(k_prime[v.kind] for v in vocabs), seed=settings.seed, batch_size=settings.batch_size,
        device=settings.device, entry_block=settings.entry_block, min_tail_s=settings.min_tail_s,
        threads=threads_per_worker(setup.workers if setup.local else 1),
    )
    if settings.dry_run:
        print(json.dumps({"config": resolved(settings), "shards": len(shards), "model_id": embedder.model_id,
                          "vocabularies": [v.to_json() for v in vocabs], "runner": setup.describe(),
                          "beam_args": setup.args}, indent=2, default=str))
        return 0
    labelling = replace(labelling, out_dir=claim_label_dir(layout, settings.name, _identity(labelling, splits),
                                                           settings.overwrite))
    text_started = time.perf_counter()
    embed_vocabularies(embedder, labelling, settings.text_batch)
    text_s = time.perf_counter() - text_started
    del embedder
    print(f"n2m label: {len(shards)} shards x {len(vocabs)} vocabularies "
          f"({', '.join(f'{v.name}: {v.size} {v.kind}' + _dropped(v) for v in vocabs)}) on {setup.describe()}")
    # what Beam's local worker processes print (their own import notes, runner chatter) goes to a log, not the console
    log = None if settings.verbose or not setup.local else os.path.join(tempfile.gettempdir(),
                                                                         f"n2m-label-workers-{os.getpid()}.log")
    with worker_output_to(log), BeamSession(setup) as session:
        session.run(lambda p: score_pipeline(p, labelling, shards), items=len(shards))
        scored, _ = global_counts(labelling, shards)
        if scored:
            session.run(lambda p: assign_pipeline(p, labelling, scored), items=len(scored))
    manifest = write_manifest(labelling, settings, shards, splits, text_s, time.perf_counter() - started)
    missing = manifest["counts"]["shards_missing"]
    if missing:
        kept = " (the previous label set is unchanged)" if labelling.out_dir != layout.label_dir(settings.name) else ""
        raise JobFailed(f"{missing} shard(s) produced no labels{kept}: {_why_missing(shards, manifest)}")
    swap_in(layout, settings.name, labelling.out_dir)
    _summary(layout.label_dir(settings.name), manifest)
    return 0


def _dropped(vocab) -> str:
    return f" ({', '.join(f'{n} {r}' for r, n in vocab.dropped)} left out)" if vocab.dropped else ""


def _why_missing(shards, manifest: dict) -> str:
    """The first missing shard and why (a damaged tar is named; anything else is resumable)."""
    first = next(r for r in shards if r.name == manifest["missing_shards"][0])
    try:
        verify_shard(first.tar)
    except ShardDamaged as err:
        return str(err)
    others = len(manifest["missing_shards"]) - 1
    return f"{first.name}{f' and {others} more' if others else ''} failed during the job; re-run the same command " \
           "to resume"


def write_manifest(settings: LabelSettings, job: LabelJobSettings, shards, splits, text_s: float,
                   total_s: float) -> dict:
    """``labels/NAME/manifest.json`` from the shard markers."""
    from n2m.labeling.job import FAILURES_IN_MANIFEST

    markers, missing = [], []
    for ref in shards:
        path = settings.marker_path(ref.name)
        (markers.append(json.loads(read_bytes(path))) if exists(path) else missing.append(ref.name))
    failures = [dict(f, shard=m["shard"]) for m in markers for f in m["failed"]]
    by_reason = collections.Counter(f["reason"] for f in failures)
    build_json = BuildLayout(settings.build).build_json
    manifest = {
        "labels_version": LABELS_VERSION,
        "name": settings.name,
        "created": now_iso(),
        "build": {"root": settings.build if is_remote(settings.build) else str(Path(settings.build).resolve()),
                  "id": settings.build_id,
                  "build_json": build_json if exists(build_json) else None},
        "model": {"path": settings.model, "sha1": settings.model_id, "embeddings": settings.embed_dir,
                  "embedding_files": [m["embeddings"] for m in markers if m.get("embeddings")],
                  "min_tail_s": settings.min_tail_s},
        "vocabularies": [dict(v.to_json(), k_prime=kp, text_embeddings=tc)
                         for v, kp, tc in zip(settings.vocabs, settings.k_prime, settings.text_caches)],
        "k": settings.k,
        "k_prime": {v.name: kp for v, kp in zip(settings.vocabs, settings.k_prime)},
        "seed": settings.seed,
        "splits": splits or sorted({r.split for r in shards}),
        "counts": {"shards": len(shards), "shards_labelled": len(markers), "shards_missing": len(missing),
                   "clips": sum(m["clips"] for m in markers), "labelled": sum(m["labelled"] for m in markers),
                   "rows": sum(m["rows"] for m in markers), "failed": len(failures),
                   "failed_by_reason": dict(by_reason), "embeddings_cached_shards":
                       sum(bool(m.get("embeddings_cached")) for m in markers)},
        "missing_shards": missing,
        "failures": failures[:FAILURES_IN_MANIFEST],
        "timings_s": {"total": round(total_s, 2), "text_embeddings": round(text_s, 2),
                      "audio_embeddings_sum": round(sum(m["embed_s"] for m in markers), 2),
                      "scoring_sum": round(sum(m["score_s"] for m in markers), 2),
                      "assignment_sum": round(sum(m["assign_s"] for m in markers), 2)},
        "config": resolved(job),
        "versions": versions(("tokenizers", "scipy")),
    }
    write_json(f"{settings.out_dir}/manifest.json", manifest)
    return manifest


def _summary(label_dir: str, manifest: dict) -> None:
    c = manifest["counts"]
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(c["failed_by_reason"].items())) or "none"
    print(f"n2m label: {c['labelled']}/{c['clips']} clips labelled in {c['shards_labelled']}/{c['shards']} shards "
          f"({c['rows']} rows, {c['embeddings_cached_shards']} shards reused stored audio embeddings); "
          f"failed clips: {c['failed']} ({reasons}); {manifest['timings_s']['total']:.1f} s")
    print(f"n2m label: wrote {label_dir}/ (manifest.json)")

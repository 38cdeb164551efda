"""``n2m label``: options, the driver around the Beam job (labeling.job), the summary and ``manifest.json``."""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

from labeling.beam import add_beam_argument, options_for, run_beam, threads_per_worker
from labeling.io import exists, read_bytes
from labeling.job import (
    FAILURES_IN_MANIFEST,
    LabelSettings,
    build_id,
    build_pipeline,
    committed_shards,
    embed_vocabularies,
    parse_k_prime,
    text_cache_path,
)
from labeling.vocabset import open_vocabularies
from n2m.config import leaf, resolved
from n2m.errors import JobFailed, UserError
from n2m.provenance import now_iso, versions, write_json
from n2m.schema import LABELS_VERSION, BuildLayout


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build", required=True, metavar="OUT", help="build output folder (n2m build --out)")
    parser.add_argument("--vocab", required=True, action="append", metavar="PARQUET",
                        help="vocabulary file (n2m vocab; VOCAB_SCHEMA); repeat for several. A file holding both "
                             "kinds is scored as two vocabularies")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="CLAP model directory (transformers layout: n2m clap convert / n2m clap-train output, "
                             "or a local laion/clap-htsat-unfused copy)")
    parser.add_argument("--name", required=True, help="label set name: writes OUT/labels/NAME/")
    parser.add_argument("--k", type=int, default=10, help="top-K entries kept per clip and vocabulary (default 10)")
    parser.add_argument("--k-prime", default="3,6", metavar="LONG,SHORT",
                        help="captions sampled per clip from the top-K, for long- and short-form vocabularies "
                             "(default 3,6 as in Noise2Music)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same inputs and seed give the same labels")
    parser.add_argument("--batch-size", type=int, default=8, help="10 s audio windows per model forward")
    parser.add_argument("--text-batch", type=int, default=64, help="vocabulary entries per text forward")
    parser.add_argument("--device", default="cpu", help="torch device for CLAP and scoring: cpu, cuda, cuda:1")
    parser.add_argument("--splits", default="", help="comma-separated splits to label (default: all)")
    parser.add_argument("--entry-block", type=int, default=32_768,
                        help="vocabulary entries scored per block (bounds memory: clips x block floats)")
    parser.add_argument("--min-tail-s", type=float, default=None,
                        help="shortest trailing part of a clip that becomes its own 10 s window (default: 5 s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing label set NAME made with different settings")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved settings and shard count, then stop")
    add_beam_argument(parser)
    leaf(parser, run)


def _identity(settings: LabelSettings, splits: list[str]) -> dict:
    return {"model_id": settings.model_id, "vocabs": [[v.name, v.cache_id] for v in settings.vocabs],
            "k": settings.k, "k_prime": list(settings.k_prime), "seed": settings.seed, "splits": splits,
            "min_tail_s": settings.min_tail_s, "labels_version": LABELS_VERSION}


def _claim_label_dir(settings: LabelSettings, identity: dict, overwrite: bool) -> None:
    """A label set NAME holds one set of settings: resume it, or refuse to mix unless ``--overwrite``."""
    job_json = f"{settings.label_dir}/job.json"
    if exists(job_json):
        previous = json.loads(read_bytes(job_json)).get("identity")
        if previous != identity:
            if not overwrite:
                raise UserError(f"label set {settings.name!r} exists with other settings "
                                f"({settings.label_dir}); pick another --name or pass --overwrite")
            root = Path(settings.label_dir)
            for path in [*root.glob("*.parquet"), *root.glob("_markers/*.json"), *root.glob("_topk/*.npz"),
                         root / "manifest.json"]:
                path.unlink(missing_ok=True)
    write_json(job_json, {"identity": identity, "started": now_iso()})


def run(args: argparse.Namespace) -> int:
    from n2m.clap import ClapEmbedder

    started = time.perf_counter()
    layout = BuildLayout(args.build)
    if not exists(layout._join("shards")):
        raise UserError(f"--build {args.build}: no shards/ folder (run n2m build first)")
    if args.k < 1 or args.batch_size < 1 or args.entry_block < 1:
        raise UserError("--k, --batch-size and --entry-block must be >= 1")
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    shards = committed_shards(args.build, splits)
    if not shards:
        raise UserError(f"--build {args.build}: no committed shards{' in ' + ','.join(splits) if splits else ''}")
    vocabs = open_vocabularies(args.vocab)
    k_prime = parse_k_prime(args.k_prime)
    kwargs = {} if args.min_tail_s is None else {"min_tail_s": args.min_tail_s}
    embedder = ClapEmbedder.from_pretrained(args.model, device=args.device, **kwargs)
    embed_dir = layout.embedding_dir(embedder.model_id[:16])
    _, direct, workers = options_for(args.beam_args or [], len(shards), args.verbose)
    settings = LabelSettings(
        build=args.build, name=args.name, model=str(Path(args.model).resolve()), model_id=embedder.model_id,
        vocabs=tuple(vocabs), text_caches=tuple(text_cache_path(embed_dir, v) for v in vocabs), k=args.k,
        k_prime=tuple(k_prime[v.kind] for v in vocabs), seed=args.seed, batch_size=args.batch_size,
        device=args.device, entry_block=args.entry_block, min_tail_s=args.min_tail_s,
        threads=threads_per_worker(workers if direct else 1),
    )
    if args.dry_run:
        print(json.dumps({"config": resolved(args), "shards": len(shards), "model_id": embedder.model_id,
                          "vocabularies": [v.to_json() for v in vocabs], "workers": workers}, indent=2, default=str))
        return 0
    _claim_label_dir(settings, _identity(settings, splits), args.overwrite)
    text_started = time.perf_counter()
    embed_vocabularies(embedder, settings, args.text_batch)
    text_s = time.perf_counter() - text_started
    del embedder
    print(f"n2m label: {len(shards)} shards x {len(vocabs)} vocabularies "
          f"({', '.join(f'{v.name}: {v.size} {v.kind}' for v in vocabs)}) with {workers or 'runner'} worker(s)")
    run_beam(lambda p: build_pipeline(p, settings, shards), args.beam_args or [], len(shards), args.verbose)
    manifest = write_manifest(settings, args, shards, splits, text_s, time.perf_counter() - started)
    _summary(settings, manifest)
    if manifest["counts"]["shards_missing"]:
        raise JobFailed(f"{manifest['counts']['shards_missing']} shard(s) produced no labels; re-run to resume")
    return 0


def write_manifest(settings: LabelSettings, args: argparse.Namespace, shards, splits, text_s: float,
                   total_s: float) -> dict:
    """``labels/NAME/manifest.json`` from the shard markers."""
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
        "build": {"root": str(Path(settings.build).resolve()), "id": build_id(settings.build),
                  "build_json": build_json if exists(build_json) else None},
        "model": {"path": settings.model, "sha1": settings.model_id, "embeddings": settings.embed_dir,
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
        "config": resolved(args),
        "versions": versions(("tokenizers", "scipy")),
    }
    write_json(settings.layout.label_manifest(settings.name), manifest)
    return manifest


def _summary(settings: LabelSettings, manifest: dict) -> None:
    c = manifest["counts"]
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(c["failed_by_reason"].items())) or "none"
    print(f"n2m label: {c['labelled']}/{c['clips']} clips labelled in {c['shards_labelled']}/{c['shards']} shards "
          f"({c['rows']} rows, {c['embeddings_cached_shards']} shards reused stored audio embeddings); "
          f"failed clips: {c['failed']} ({reasons}); {manifest['timings_s']['total']:.1f} s")
    print(f"n2m label: wrote {settings.label_dir}/ (manifest.json)")

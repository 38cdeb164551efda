"""``n2m label``: pseudo-label every clip of a build with CLAP, as two Beam jobs over shards (Noise2Music section 3.3).

Stages (two Beam jobs with the driver between them; every stage resumable per shard):

1. driver: the vocabularies' text embeddings, computed in blocks and cached in
   ``OUT/embeddings/{model}/text/{vocab}.npy`` (a new label set with the same vocabulary and model reuses them);
2. ``ScoreShard`` (one work item per shard, batched inference inside): the shard's audio embeddings
   (``OUT/embeddings/{model}/{shard sha1}.npz``, keyed by the shard's content as its marker records it, so they are
   reused across label sets and never across different audio; the tar is checked against its marker's byte count and
   SHA-1 before it is read), then per vocabulary the streaming top-K (``n2m.labeling.topk``) into
   ``labels/NAME/_topk/{shard}.npz``;
3. driver: every shard's top-K lists checked (a shard the runner did not score fails the job; a damaged one is named
   at the end), then how many top-K lists hold each entry, written to ``labels/NAME/_counts.npz``;
4. ``AssignShard`` (second job): ``K'`` captions per clip and vocabulary sampled with ``P ~ 1 / count``
   (``n2m.labeling.assign``), written to ``labels/NAME/{split}-NNNNNN.parquet`` (``n2m.schema.LABELS_SCHEMA``) with its marker
   ``labels/NAME/_markers/{shard}.json`` written last;
5. driver: ``labels/NAME/manifest.json`` from the markers.

The global counts travel through a file rather than a side input: Beam's DaskRunner recomputes a side input's whole
upstream graph inside each task that reads it and, there, returned every element twice (Beam 2.77; n2m.beam).
A re-run skips every shard whose outputs carry the same settings digest (which includes the shard's SHA-1); audio shards
are never rewritten. A damaged shard produces no labels and fails the job (the driver names it).
Inference runs inside a per-shard DoFn rather than Beam's RunInference: the unit of resumption, storage and batching is
the shard (a clip's windows are batched across the shard's clips), which RunInference's per-element batching does not
express.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from n2m.beam import import_beam
from n2m.errors import JobFailed, ShardDamaged, UserError
from n2m.labeling.io import load_npz, save_npz
from n2m.labeling.vocabset import Vocabulary
from n2m.layout import BuildLayout, Shard, committed_shards, verify_shard
from n2m.schema import LABELS_SCHEMA, LABELS_VERSION
from n2m.storage import exists, read_bytes, write_bytes_atomic

beam = import_beam()  # Beam workers import this module on their own: its optional-GCP-client notes stay silent

FAILURES_IN_MANIFEST = 1_000


@dataclass(frozen=True)
class ShardRef(Shard):
    """A committed build shard with what its marker records: the tar's ``sha1`` and the number of ``clips``."""

    sha1: str
    clips: int


@dataclass(frozen=True)
class LabelSettings:
    """Everything a worker needs (picklable)."""

    build: str
    name: str
    out_dir: str  # where this run writes: labels/NAME, or a hidden sibling while --overwrite rebuilds it
    build_id: str
    model: str
    model_id: str
    vocabs: tuple[Vocabulary, ...]
    text_caches: tuple[str, ...]
    k: int
    k_prime: tuple[int, ...]
    seed: int
    batch_size: int
    device: str
    entry_block: int
    min_tail_s: float | None
    threads: int

    @property
    def layout(self) -> BuildLayout:
        return BuildLayout(self.build)

    @property
    def label_dir(self) -> str:
        return self.out_dir

    @property
    def counts_path(self) -> str:
        """Stage 3's global counts (written by the driver between the two jobs)."""
        return f"{self.out_dir}/_counts.npz"

    @property
    def embed_dir(self) -> str:
        return self.layout.embedding_dir(self.model_id[:16])

    def embedding_path(self, ref: ShardRef) -> str:
        """Audio embeddings are keyed by the shard's content (the SHA-1 in its marker), never by its name alone."""
        return f"{self.embed_dir}/{ref.sha1}.npz"

    def score_digest(self, ref: ShardRef) -> str:
        """Identity of a shard's top-K lists: shard content, model, window rule, vocabularies, K."""
        ident = [ref.sha1, self.model_id, self.min_tail_s, self.k, [(v.cache_id, v.name) for v in self.vocabs]]
        return hashlib.sha1(json.dumps(ident).encode()).hexdigest()

    def table_path(self, ref: ShardRef) -> str:
        return f"{self.out_dir}/{ref.name}.parquet"

    def topk_path(self, shard: str) -> str:
        return f"{self.out_dir}/_topk/{shard}.npz"

    def marker_path(self, shard: str) -> str:
        return f"{self.out_dir}/_markers/{shard}.json"


# ---------------------------------------------------------------------------------------------------------------------
# Driver helpers


def parse_k_prime(text: str) -> dict[str, int]:
    """``"3,6"`` (long, short), ``"long=3,short=6"`` or ``"4"`` (both) -> ``{"long": 3, "short": 6}``."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        if all("=" in p for p in parts):
            values = {k.strip(): int(v) for k, v in (p.split("=", 1) for p in parts)}
        elif len(parts) == 1:
            values = {"long": int(parts[0]), "short": int(parts[0])}
        elif len(parts) == 2:
            values = {"long": int(parts[0]), "short": int(parts[1])}
        else:
            raise ValueError
    except ValueError:
        raise UserError(f"--k-prime {text!r}: expected LONG,SHORT (e.g. 3,6), long=N,short=M or one number") from None
    if set(values) - {"long", "short"} or any(v < 1 for v in values.values()):
        raise UserError(f"--k-prime {text!r}: kinds are long and short, counts >= 1")
    return {"long": values.get("long", 3), "short": values.get("short", 6)}


def shard_refs(build: str, splits: list[str] | None) -> list[ShardRef]:
    """The committed shards of the build (:func:`n2m.layout.committed_shards`; all splits when ``splits`` is empty),
    each checked against its marker's byte count here (cheap; the SHA-1 is checked by the worker before it reads the
    tar)."""
    refs = []
    for shard in committed_shards(build, splits or None):
        stats = verify_shard(shard.tar, content=False)
        refs.append(ShardRef(shard.split, shard.index, shard.tar, shard.marker, stats["tar"]["sha1"],
                             len(stats.get("clips") or [])))
    return refs


def text_cache_path(embed_dir: str, vocab: Vocabulary) -> str:
    return f"{embed_dir}/text/{vocab.cache_id}.npy"


def embed_vocabularies(embedder, settings: LabelSettings, text_batch: int) -> None:
    """Stage 1: every vocabulary's text embeddings, blocked and cached (skipped when cached)."""
    from n2m.labeling.topk import text_embedding_cache
    from n2m.progress import bar as progress_bar

    for vocab, path in zip(settings.vocabs, settings.text_caches):
        texts = vocab.table(("text",))["text"]
        with progress_bar(total=vocab.size, desc=f"text embeddings {vocab.name}", unit="entry", leave=False) as bar:
            text_embedding_cache(path, lambda a, b, t=texts: t.slice(a, b - a).to_pylist(), vocab.size,
                                 lambda batch: embedder.embed_text(batch, batch_size=text_batch), embedder.embed_dim,
                                 progress=bar.update)


# ---------------------------------------------------------------------------------------------------------------------
# Beam stages


_EMBEDDERS: dict[tuple, Any] = {}  # one CLAP model per worker process, for runners that set a DoFn up per bundle


def _embedder(model: str, model_id: str, device: str, min_tail_s: float | None):
    """The process's CLAP embedder for these settings, loaded once; keyed by the model's content hash as well, so a
    long-lived worker (a Dask cluster serving several jobs) never reuses a model whose files changed."""
    key = (model, model_id, device, min_tail_s)
    if key not in _EMBEDDERS:
        from n2m.clap import ClapEmbedder

        _EMBEDDERS.clear()
        kwargs = {} if min_tail_s is None else {"min_tail_s": min_tail_s}
        _EMBEDDERS[key] = ClapEmbedder.from_pretrained(model, device=device, **kwargs)
    return _EMBEDDERS[key]


class ScoreShard:
    """Stage 2 DoFn body: ``ShardRef`` -> its stats (top-K lists stored in ``labels/NAME/_topk/{shard}.npz``)."""

    def __init__(self, settings: LabelSettings):
        self.settings = settings
        self.embedder = None
        self.matrices: list[np.ndarray] = []

    def setup(self) -> None:
        import torch

        from n2m.labeling.topk import load_npy

        torch.set_num_threads(self.settings.threads)
        s = self.settings
        self.embedder = _embedder(s.model, s.model_id, s.device, s.min_tail_s)
        self.matrices = [load_npy(p) for p in self.settings.text_caches]

    def process(self, ref: ShardRef) -> dict[str, Any]:
        from n2m.labeling.embed import shard_embeddings
        from n2m.labeling.topk import memmap_blocks, stream_topk

        s = self.settings
        digest = s.score_digest(ref)
        topk_path = s.topk_path(ref.name)
        stored = _load_topk(topk_path, digest)
        if stored is not None:
            return stored["stats"]
        started = time.perf_counter()
        try:
            emb = shard_embeddings(self.embedder, ref.tar, ref.sha1, s.embedding_path(ref), s.batch_size)
        except ShardDamaged as err:  # no top-K lists: the driver finds the shard damaged, names it, fails the job
            return {"shard": ref.name, "damaged": str(err)}
        embed_s = time.perf_counter() - started
        arrays: dict[str, np.ndarray] = {"keys": np.array(emb.keys, dtype=str)}
        for i, matrix in enumerate(self.matrices):
            ids, scores = stream_topk(emb.embeddings, memmap_blocks(matrix, s.entry_block), s.k, device=s.device)
            arrays[f"ids_{i}"], arrays[f"scores_{i}"] = ids, scores
        stats = {"shard": ref.name, "clips": len(emb.keys) + sum(f["key"] != "*" for f in emb.failed),
                 "embedded": len(emb.keys), "failed": emb.failed, "embeddings_cached": emb.cached,
                 "embeddings": s.embedding_path(ref),
                 "embed_s": round(embed_s, 3), "score_s": round(time.perf_counter() - started - embed_s, 3)}
        save_npz(topk_path, digest=np.array(digest), stats=np.array(json.dumps(stats)), **arrays)
        return stats


def _load_topk(path: str, digest: str) -> dict | None:
    if not exists(path):
        return None
    try:
        data = load_npz(path)
    except (OSError, ValueError):
        return None
    if str(data.get("digest")) != digest:
        return None
    out = {k: v for k, v in data.items() if k.startswith(("ids_", "scores_"))}
    return {**out, "keys": [str(k) for k in data["keys"]], "stats": json.loads(str(data["stats"]))}


def global_counts(settings: LabelSettings, shards: list[ShardRef], threads: int = 8) -> tuple[list[ShardRef], list]:
    """Stage 3 (driver): ``(scored shards, damaged shards)`` after the scoring job, and ``labels/NAME/_counts.npz``:
    per vocabulary ``i``, ``counts_{i}`` ``[vocab.size]`` int64 = how many top-K lists of the scored shards hold each
    entry. Raises :class:`JobFailed` when a shard that is not damaged has no top-K lists (the runner lost it)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        stored = list(pool.map(lambda r: _load_topk(settings.topk_path(r.name), settings.score_digest(r)), shards))
    scored, damaged, lost = [], [], []
    for ref, data in zip(shards, stored):
        if data is not None:
            scored.append((ref, data))
            continue
        try:
            verify_shard(ref.tar)
            lost.append(ref.name)
        except ShardDamaged:
            damaged.append(ref)
    if lost:
        raise JobFailed(f"the scoring run finished but {len(lost)} of {len(shards)} shards have no top-K lists "
                        f"({', '.join(lost[:3])}{'...' if len(lost) > 3 else ''}); re-run the same command to resume")
    counts = {}
    for i, vocab in enumerate(settings.vocabs):
        total = np.zeros(vocab.size, np.int64)
        for _, data in scored:
            ids = data[f"ids_{i}"]
            total += np.bincount(ids[ids >= 0], minlength=vocab.size)
        counts[f"counts_{i}"] = total
    save_npz(settings.counts_path, **counts)
    return [ref for ref, _ in scored], damaged


class AssignShard:
    """Stage 4 DoFn body: scored shard + global counts (``_counts.npz``) -> label table + marker; returns the marker."""

    def __init__(self, settings: LabelSettings):
        self.settings = settings
        self.entries: list = []
        self.counts: dict[str, np.ndarray] = {}

    def setup(self) -> None:
        self.entries = [v.table(("id", "text")) for v in self.settings.vocabs]
        stored = load_npz(self.settings.counts_path)
        self.counts = {v.name: stored[f"counts_{i}"] for i, v in enumerate(self.settings.vocabs)}

    def process(self, ref: ShardRef) -> dict:
        """The shard's marker."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from n2m.labeling.assign import assign

        s = self.settings
        counts = self.counts
        counts_digest = hashlib.sha1(b"".join(counts[v.name].tobytes() for v in s.vocabs)).hexdigest()
        digest = hashlib.sha1(json.dumps([s.score_digest(ref), counts_digest, s.seed, s.k_prime]).encode()).hexdigest()
        marker = s.marker_path(ref.name)
        table_path = s.table_path(ref)
        if exists(marker) and exists(table_path):
            previous = json.loads(read_bytes(marker))
            if previous.get("digest") == digest:
                return previous
        started = time.perf_counter()
        stored = _load_topk(s.topk_path(ref.name), s.score_digest(ref))
        if stored is None:
            raise RuntimeError(f"top-K lists of {ref.name} vanished during the job")
        keys = stored["keys"]
        columns: dict[str, list] = {name: [] for name in LABELS_SCHEMA.names}
        per_vocab = []
        for i, vocab in enumerate(s.vocabs):
            ids = stored[f"ids_{i}"]
            picks = assign(keys, ids, counts[vocab.name], s.k_prime[i], s.seed, vocab.name)
            per_vocab.append((vocab, ids, stored[f"scores_{i}"], picks, self.entries[i]))
        for row, key in enumerate(keys):
            for vocab, ids, scores, picks, entries in per_vocab:
                valid = ids[row] >= 0
                columns["key"].append(key)
                columns["vocab"].append(vocab.name)
                columns["kind"].append(vocab.kind)
                columns["topk_ids"].append(entries["id"].take(pa.array(ids[row][valid])).to_pylist())
                columns["topk_scores"].append(scores[row][valid].astype(np.float32).tolist())
                columns["captions"].append(entries["text"].take(pa.array(picks[row])).to_pylist())
        table = pa.Table.from_pydict(columns, schema=LABELS_SCHEMA).replace_schema_metadata(
            {"n2m.labels_version": str(LABELS_VERSION), "n2m.digest": digest})
        import io

        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        write_bytes_atomic(table_path, buffer.getvalue())
        result = dict(stored["stats"], digest=digest, rows=table.num_rows, labelled=len(keys),
                      assign_s=round(time.perf_counter() - started, 3))
        write_bytes_atomic(marker, json.dumps(result, sort_keys=True).encode())
        return result


class _ScoreFn(beam.DoFn):
    def __init__(self, settings: LabelSettings):
        self.body = ScoreShard(settings)

    def setup(self):
        self.body.setup()

    def process(self, ref):
        yield self.body.process(ref)


class _AssignFn(beam.DoFn):
    def __init__(self, settings: LabelSettings):
        self.body = AssignShard(settings)

    def setup(self):
        self.body.setup()

    def process(self, ref):
        yield self.body.process(ref)


def score_pipeline(pipeline, settings: LabelSettings, shards: list[ShardRef]) -> None:
    """The first job: stage 2 over ``shards`` (one sink)."""
    _ = (
        pipeline
        | "Shards" >> beam.Create(shards)
        | "Spread" >> beam.Reshuffle()
        | "Score" >> beam.ParDo(_ScoreFn(settings))
    )


def assign_pipeline(pipeline, settings: LabelSettings, shards: list[ShardRef]) -> None:
    """The second job: stage 4 over the scored ``shards`` (one sink)."""
    _ = (
        pipeline
        | "Shards" >> beam.Create(shards)
        | "Spread" >> beam.Reshuffle()
        | "Assign" >> beam.ParDo(_AssignFn(settings))
    )


def threads_per_worker(workers: int | None) -> int:
    """Torch threads for each worker process so that all workers together use the cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers or 1))

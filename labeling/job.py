"""``n2m label``: pseudo-label every clip of a build with CLAP, as a Beam job over shards (Noise2Music section 3.3).

Stages (one Beam pipeline; every stage resumable per shard):

1. driver: the vocabularies' text embeddings, computed in blocks and cached in
   ``OUT/embeddings/{model}/text/{vocab}.npy`` (a new label set with the same vocabulary and model reuses them);
2. ``ScoreShard`` (one work item per shard, batched inference inside): the shard's audio embeddings
   (``OUT/embeddings/{model}/{shard sha1}.npz``, keyed by the shard's content as its marker records it, so they are
   reused across label sets and never across different audio; the tar is checked against its marker's byte count and
   SHA-1 before it is read), then per vocabulary the streaming top-K (``labeling.topk``) into
   ``labels/NAME/_topk/{shard}.npz``;
3. global count pass: how many top-K lists hold each entry (``CombinePerKey`` over the shards' sparse counts);
4. ``AssignShard``: ``K'`` captions per clip and vocabulary sampled with ``P ~ 1 / count`` (``labeling.assign``), written
   to ``labels/NAME/{split}-NNNNNN.parquet`` (``n2m.schema.LABELS_SCHEMA``) with its marker
   ``labels/NAME/_markers/{shard}.json`` written last;
5. driver: ``labels/NAME/manifest.json`` from the markers.

A re-run skips every shard whose outputs carry the same settings digest (which includes the shard's SHA-1); audio shards
are never rewritten. A damaged shard produces no labels and fails the job (the driver names it).
Inference runs inside a per-shard DoFn rather than Beam's RunInference: the unit of resumption, storage and batching is
the shard (a clip's windows are batched across the shard's clips), which RunInference's per-element batching does not
express.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np

from labeling.io import exists, glob, load_npz, read_bytes, save_npz, write_bytes_atomic
from labeling.vocabset import Vocabulary
from n2m.errors import ShardDamaged, UserError
from n2m.schema import LABELS_SCHEMA, LABELS_VERSION, BuildLayout, verify_shard

FAILURES_IN_MANIFEST = 1_000


@dataclass(frozen=True)
class ShardRef:
    """A committed build shard: ``name`` is ``{split}-NNNNNN``; ``sha1`` and ``clips`` come from its marker."""

    split: str
    index: int
    tar: str
    sha1: str
    clips: int

    @property
    def name(self) -> str:
        return f"{self.split}-{self.index:06d}"


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


def committed_shards(build: str, splits: list[str] | None) -> list[ShardRef]:
    """Shards whose marker exists (a shard exists only once its marker does, ARCHITECTURE.md section 2), each checked
    against its marker's byte count here (cheap; the SHA-1 is checked by the worker before it reads the tar)."""
    layout = BuildLayout(build)
    refs = []
    for marker in glob(f"{layout._join('shards')}/*/*-[0-9][0-9][0-9][0-9][0-9][0-9].json"):
        stem = marker.rsplit("/", 1)[-1][: -len(".json")]
        split, _, index = stem.rpartition("-")
        if splits and split not in splits:
            continue
        tar = layout.shard(split, int(index))
        if exists(tar):
            stats = verify_shard(tar, content=False)
            refs.append(ShardRef(split, int(index), tar, stats["tar"]["sha1"], len(stats.get("clips") or [])))
    return sorted(refs, key=lambda r: (r.split, r.index))


def text_cache_path(embed_dir: str, vocab: Vocabulary) -> str:
    return f"{embed_dir}/text/{vocab.cache_id}.npy"


def embed_vocabularies(embedder, settings: LabelSettings, text_batch: int) -> None:
    """Stage 1: every vocabulary's text embeddings, blocked and cached (skipped when cached)."""
    from tqdm import tqdm

    from labeling.topk import text_embedding_cache

    for vocab, path in zip(settings.vocabs, settings.text_caches):
        texts = vocab.table(("text",))["text"]
        with tqdm(total=vocab.size, desc=f"text embeddings {vocab.name}", unit="entry", leave=False) as bar:
            text_embedding_cache(path, lambda a, b, t=texts: t.slice(a, b - a).to_pylist(), vocab.size,
                                 lambda batch: embedder.embed_text(batch, batch_size=text_batch), embedder.embed_dim,
                                 progress=bar.update)


# ---------------------------------------------------------------------------------------------------------------------
# Beam stages


class ScoreShard:
    """Stage 2 DoFn body: ``ShardRef`` -> ``{"shard", "counts": {vocab: (ids, counts)}, "stats"}``."""

    def __init__(self, settings: LabelSettings):
        self.settings = settings
        self.embedder = None
        self.matrices: list[np.ndarray] = []

    def setup(self) -> None:
        import torch

        from n2m.clap import ClapEmbedder

        torch.set_num_threads(self.settings.threads)
        kwargs = {} if self.settings.min_tail_s is None else {"min_tail_s": self.settings.min_tail_s}
        self.embedder = ClapEmbedder.from_pretrained(self.settings.model, device=self.settings.device, **kwargs)
        self.matrices = [np.load(p, mmap_mode="r") for p in self.settings.text_caches]

    def process(self, ref: ShardRef) -> dict[str, Any]:
        from labeling.embed import shard_embeddings
        from labeling.topk import memmap_blocks, stream_topk

        s = self.settings
        digest = s.score_digest(ref)
        topk_path = s.topk_path(ref.name)
        stored = _load_topk(topk_path, digest)
        if stored is not None:
            return {"shard": ref, "counts": _sparse_counts(stored, s.vocabs), "stats": stored["stats"]}
        started = time.perf_counter()
        try:
            emb = shard_embeddings(self.embedder, ref.tar, ref.sha1, s.embedding_path(ref), s.batch_size)
        except ShardDamaged as err:  # no labels for this shard; the driver names it and fails the job
            return {"shard": ref, "counts": {}, "stats": {"shard": ref.name, "damaged": str(err)}}
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
        stored = {"keys": list(emb.keys), "stats": stats,
                  **{k: v for k, v in arrays.items() if k != "keys"}}
        return {"shard": ref, "counts": _sparse_counts(stored, s.vocabs), "stats": stats}


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


def _sparse_counts(stored: dict, vocabs: tuple[Vocabulary, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for i, vocab in enumerate(vocabs):
        ids = stored[f"ids_{i}"]
        uniq, counts = np.unique(ids[ids >= 0], return_counts=True)
        out[vocab.name] = (uniq, counts)
    return out


class AssignShard:
    """Stage 4 DoFn body: scored shard + global counts -> label table + marker; returns the marker."""

    def __init__(self, settings: LabelSettings):
        self.settings = settings
        self.entries: list = []

    def setup(self) -> None:
        self.entries = [v.table(("id", "text")) for v in self.settings.vocabs]

    def process(self, scored: dict, sparse_counts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict | None:
        """The shard's marker; ``None`` for a damaged shard (nothing written)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from labeling.assign import assign

        s = self.settings
        ref: ShardRef = scored["shard"]
        if scored.get("damaged"):
            return None
        counts = {}
        for vocab in s.vocabs:
            dense = np.zeros(vocab.size, np.int64)
            ids, values = sparse_counts.get(vocab.name, (np.zeros(0, np.int64), np.zeros(0, np.int64)))
            dense[np.asarray(ids, np.int64)] = values
            counts[vocab.name] = dense
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

    def process(self, scored, counts):
        marker = self.body.process(scored, counts)
        if marker is not None:
            yield marker


class SparseSum(beam.CombineFn):
    """Global count pass: per-shard sparse ``(ids, counts)`` -> one sparse ``(ids, counts)`` per vocabulary."""

    def create_accumulator(self):
        return (np.zeros(0, np.int64), np.zeros(0, np.int64))

    def add_input(self, acc, sparse):
        return self.merge_accumulators([acc, sparse])

    def merge_accumulators(self, accs):
        accs = list(accs)
        ids = np.concatenate([np.asarray(a[0], np.int64) for a in accs])
        counts = np.concatenate([np.asarray(a[1], np.int64) for a in accs])
        uniq, inverse = np.unique(ids, return_inverse=True)
        return uniq, np.bincount(inverse, weights=counts, minlength=uniq.size).astype(np.int64)

    def extract_output(self, acc):
        return acc


def build_pipeline(pipeline, settings: LabelSettings, shards: list[ShardRef]) -> None:
    """Score -> global counts -> assign (see the module docstring)."""
    scored = (
        pipeline
        | "Shards" >> beam.Create(shards)
        | "Spread" >> beam.Reshuffle()
        | "Score" >> beam.ParDo(_ScoreFn(settings))
    )
    counts = (
        scored
        | "SparseCounts" >> beam.FlatMap(lambda r: list(r["counts"].items()))
        | "GlobalCounts" >> beam.CombinePerKey(SparseSum())
    )
    _ = (
        scored
        | "ShardOnly" >> beam.Map(lambda r: {"shard": r["shard"], "damaged": bool(r["stats"].get("damaged"))})
        | "Assign" >> beam.ParDo(_AssignFn(settings), counts=beam.pvalue.AsDict(counts))
    )

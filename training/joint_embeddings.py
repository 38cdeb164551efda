"""The joint model's audio embedding of every clip a run trains on: read from ``n2m label``'s store, else computed once
per shard and stored there (``--condition audio-embedding``, :mod:`n2m.training.conditioning`).

The store and its rules are :mod:`n2m.clip_embed`'s. A stored file is used when its rules name this model, the
reduction and this shard's content; the label job's tail rule (``--min-tail-s``) may differ from the default (either
way it is a whole-clip embedding). Files computed here carry the rules the label job writes for the same model, so
``n2m label`` reuses them in turn.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from n2m.clip_embed import REDUCE, Stored, embed_encoded, load_store, save_store, store_rules
from n2m.layout import BuildLayout, verify_shard
from n2m.progress import bar as progress_bar

log = logging.getLogger(__name__)

CLIPS_PER_CALL = 16  # clips decoded and embedded together


@dataclass
class ClipEmbeddings:
    """Clip key -> row of ``vectors`` ``[N, D]`` float32; ``stored`` / ``computed``: shards read or embedded here."""

    index: dict[str, int]
    vectors: np.ndarray
    stored: int = 0
    computed: int = 0

    def get(self, key: str) -> np.ndarray | None:
        row = self.index.get(key)
        return None if row is None else self.vectors[row]


def _usable(stored: Stored | None, model_sha1: str, shard_sha1: str) -> bool:
    """Whether a store file was made by this model, with this reduction, from this shard's content."""
    return stored is not None and stored.rules.get("model_id") == model_sha1 and stored.rules.get("reduce") == REDUCE \
        and stored.rules.get("shard_sha1") == shard_sha1


def embed_shard(embedder, url: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """``(keys, embeddings [n, D], failed)`` of every clip of one shard, in shard order; a clip that does not decode
    is recorded in ``failed`` with its reason and left out (:func:`n2m.clip_embed.embed_encoded`)."""
    from n2m.training.data import read_shards

    failed: list[dict] = []
    clips = ((sample.get("__key__", "?"), sample.get("flac")) for sample in read_shards([url]))
    keys, embeddings = embed_encoded(embedder, clips, failed, CLIPS_PER_CALL)
    return keys, embeddings, failed


def clip_embeddings(build: str, urls: list[str], model_dir: str, model_sha1: str, device: str = "cpu") -> ClipEmbeddings:
    """The embeddings of every clip of the shards ``urls`` by the joint model in ``model_dir`` (content ``model_sha1``):
    stored files where they exist, the rest embedded (the model loads only then) and stored. Prints one summary line;
    the bar (4 shards or more) follows the job's ``quiet`` (:mod:`n2m.progress`)."""
    from n2m.clap import ClapEmbedder

    store = BuildLayout(build).embedding_dir(model_sha1[:16])
    keys: list[str] = []
    blocks: list[np.ndarray] = []
    stored = computed = 0
    unwritable, embedder = False, None
    for url in progress_bar(urls, desc="joint embeddings", unit="shard", leave=False, disable=len(urls) < 4):
        shard_sha1 = str(verify_shard(url, content=False)["tar"]["sha1"])
        path = f"{store}/{shard_sha1}.npz"
        stored_file = load_store(path)
        found = (stored_file.keys, stored_file.embeddings) if _usable(stored_file, model_sha1, shard_sha1) else None
        if found is None:
            if embedder is None:
                embedder = ClapEmbedder.from_pretrained(model_dir, device=device)
            shard_keys, vectors, failed = embed_shard(embedder, url)
            try:
                save_store(path, shard_keys, vectors, failed, store_rules(embedder, shard_sha1))
            except OSError as err:
                if not unwritable:
                    log.warning("cannot store joint embeddings under %s (%s): they stay in memory for this run",
                                store, err)
                unwritable = True
            found, computed = (shard_keys, vectors), computed + 1
        else:
            stored += 1
        keys.extend(found[0])
        blocks.append(found[1])
    vectors = np.concatenate(blocks) if blocks else np.zeros((0, 0), np.float32)
    if rank_zero_only.rank == 0:
        print(f"n2m train: joint embeddings of {len(keys)} clips from {len(urls)} shards ({stored} stored, {computed} "
              f"computed now) in {store}", file=sys.stderr)
    return ClipEmbeddings({k: i for i, k in enumerate(keys)}, vectors, stored, computed)

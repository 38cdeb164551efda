"""Per-shard audio embeddings: read a build shard, decode each clip, embed it with :class:`n2m.clap.ClapEmbedder`.

Results live in the store of :mod:`n2m.clip_embed` (``OUT/embeddings/{model}/{shard sha1}.npz``: keys, embeddings
``[n, D]``, the failed clips and the embedding rules, which include the shard's SHA-1), written atomically; a file is
reused only when its rules equal this model's. They depend only on
the audio and the model, so any number of label sets and vocabularies re-score them without touching audio again, and
a rebuilt shard (new content under the same name) never picks up the embeddings of the old one. A clip that does not decode is
recorded with its :class:`n2m.audio.AudioError` reason and skipped; a damaged tar keeps the clips read before the damage.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from n2m.audio import AudioError
from n2m.clap import ClapEmbedder
from n2m.clip_embed import embed_encoded, load_store, save_store, store_rules
from n2m.errors import ShardDamaged
from n2m.layout import verify_shard
from n2m.storage import Store

CLIPS_PER_CHUNK = 16  # clips decoded and held at once (their windows are batched by the embedder)


@dataclass
class ShardEmbeddings:
    """``keys`` of the clips that embedded, their ``embeddings`` ``[n, D]``, and failures ``[{key, reason, message}]``."""

    keys: list[str]
    embeddings: np.ndarray
    failed: list[dict] = field(default_factory=list)
    cached: bool = False


def read_samples(tar_path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` per sample of a WebDataset tar (members grouped by key; the key ends at the first dot).

    A damaged archive raises :class:`AudioError` (``truncated``) after yielding the samples before the damage.
    """
    current: str | None = None
    members: dict[str, bytes] = {}
    try:
        with Store(tar_path).open_read(tar_path) as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name.rsplit("/", 1)[-1]
                key, _, ext = name.partition(".")
                if key != current and current is not None:
                    yield current, members
                    members = {}
                current = key
                members[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as err:
        if current is not None:
            yield current, members
        raise AudioError("truncated", f"{tar_path}: archive damaged after sample {current!r} ({err})") from err
    if current is not None:
        yield current, members


def embed_shard(embedder: ClapEmbedder, tar_path: str, batch_size: int = 8) -> ShardEmbeddings:
    """Embed every clip of one shard, in shard order (:func:`n2m.clip_embed.embed_encoded`). Bad clips are recorded,
    never fatal; a damaged archive is recorded once (key ``*``) after the clips before the damage."""
    failed: list[dict] = []

    def clips() -> Iterator[tuple[str, bytes | None]]:
        samples = read_samples(tar_path)
        while True:
            try:
                key, members = next(samples)
            except StopIteration:
                return
            except AudioError as err:
                failed.append({"key": "*", "reason": err.reason, "message": err.message})
                return
            yield key, members.get("flac")

    keys, embeddings = embed_encoded(embedder, clips(), failed, CLIPS_PER_CHUNK, batch_size)
    return ShardEmbeddings(keys, embeddings, failed)


def shard_embeddings(embedder: ClapEmbedder, tar_path: str, sha1: str, cache_path: str,
                     batch_size: int = 8) -> ShardEmbeddings:
    """Stored embeddings of the shard with content ``sha1``, else computed (after checking the tar against its marker:
    :func:`n2m.layout.verify_shard`, which raises :class:`n2m.errors.ShardDamaged`) and stored."""
    rules = store_rules(embedder, sha1)
    stored = load_store(cache_path)
    if stored is not None and stored.rules == json.loads(json.dumps(rules, sort_keys=True)):
        return ShardEmbeddings(stored.keys, stored.embeddings, stored.failed, cached=True)
    marker = verify_shard(tar_path)
    if marker["tar"]["sha1"] != sha1:
        raise ShardDamaged(f"shard {tar_path} was rebuilt while this job ran (its marker changed); run the job again")
    result = embed_shard(embedder, tar_path, batch_size)
    save_store(cache_path, result.keys, result.embeddings, result.failed, rules)
    return result

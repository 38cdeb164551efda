"""The training data: WebDataset shards of a build + a label set -> batches of training examples for one stage.

Train stream (infinite): every epoch of the shard list is a fresh permutation (same on every rank), split first over
ranks and then over data-loader workers, so no two readers see the same clip within an epoch (when there are fewer
shards than readers, every reader walks all shards and keeps every ``readers``-th sample instead). Samples pass a
shuffle buffer, are decoded (FLAC), made into the stage's training examples (its ``StageSpec.example``: resampled to
its rates, cut into random windows) and get one caption drawn per step (Noise2Music section 3.3). Consecutive examples are batched in the workers; a batch of a variable-window
stage shares one random length (a multiple of the network's total stride).

Beyond captions (:mod:`n2m.training.conditioning`): with a joint model, every example carries its clip's joint audio
embedding (``joint`` ``[D]``, :mod:`n2m.training.joint_embeddings`; a clip without one is skipped) and, with ``melody``,
the melody of its window (``melody`` ``[12, T]`` at the stage's rate, cut with ``x0``).

Validation: a fixed set (``val_samples`` clips of the valid split, split evenly over ranks) with fixed windows and
captions, made once, so the validation loss is comparable across runs.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from n2m.audio import AudioError, decode, downmix
from n2m.errors import UserError
from n2m.layout import BuildLayout, check_label_set, committed_shards
from n2m.manifest import clip_is_holdout
from n2m.schema import read_index, read_label_captions
from n2m.storage import Store
from n2m.training.conditioning import StageConditioning, melody_window
from n2m.training.config import DataConfig
from n2m.training.joint_embeddings import ClipEmbeddings
from n2m.training.stage_spec import StageSpec

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Shards and the disjoint stream


def read_shards(urls: Iterable[str]) -> Iterator[dict[str, Any]]:
    """WebDataset samples of the given shards, read through :mod:`n2m.storage` (local paths and URIs alike)."""

    def streams():
        for url in urls:
            try:
                with Store(url).open_read(url) as handle:
                    yield {"url": url, "stream": handle}
            except OSError as err:
                log.warning("skipping shard %s: %s", url, err)

    files = wds.tariterators.tar_file_expander(streams(), handler=wds.warn_and_continue)
    yield from wds.tariterators.group_by_keys(files, handler=wds.warn_and_continue)


def disjoint_stream(urls: list[str], seed: int, epochs: int | None = None) -> Iterator[dict[str, Any]]:
    """Raw samples for this rank and worker; ``epochs=None`` streams forever (see the module docstring)."""
    rank, world, worker, workers = wds.utils.pytorch_worker_info()
    slot, slots = rank * workers + worker, world * workers
    epoch = 0
    while epochs is None or epoch < epochs:
        order = list(urls)
        random.Random(f"{seed}:{epoch}").shuffle(order)
        if len(order) >= slots:
            yield from read_shards(order[slot::slots])
        else:
            for i, sample in enumerate(read_shards(order)):
                if i % slots == slot:
                    yield sample
        epoch += 1


# ---------------------------------------------------------------------------------------------------------------------
# Captions (Noise2Music 3.3: one text item per clip per step; short-form captions concatenated into one item)


def caption_items(key: str, captions: dict[str, dict[str, list[str]]], meta_text: list[str],
                  rng: random.Random) -> list[str]:
    """The text items of a clip: each long-form caption, the short-form captions joined (in a random order, so
    truncation to the token length drops different ones each step), and the clip's metadata text."""
    entry = captions.get(key, {})
    items = [t for t in entry.get("long", []) if t.strip()]
    short = [t for t in entry.get("short", []) if t.strip()]
    if short:
        items.append(", ".join(rng.sample(short, len(short))))
    return items + [t for t in meta_text if isinstance(t, str) and t.strip()]


def sample_caption(items: list[str], rng: random.Random) -> str:
    """One item uniformly at random; "" (unconditional) for a clip with no text."""
    return rng.choice(items) if items else ""


# ---------------------------------------------------------------------------------------------------------------------
# The data module


def content_only(mono: np.ndarray, sample_rate: int, meta: dict, window_s: float) -> np.ndarray:
    """``mono [C, T]`` without the zeros the build padded a clip's tail with (clip json ``padded``, its audio
    ``duration_s``), so the random window falls on audio, not on silence labelled with the track's captions. A clip
    whose audio is shorter than ``window_s`` keeps its padding (the window needs it;
    :func:`n2m.training.data_checks.warn_if_padded` reports such builds)."""
    duration = meta.get("duration_s")
    if not meta.get("padded") or not duration or duration < window_s:
        return mono
    return mono[..., :max(int(round(duration * sample_rate)), int(np.ceil(window_s * sample_rate)))]


class ExampleMaker:
    """Picklable per-sample transform: raw WebDataset sample -> example dict, or None for a bad clip.

    ``text``: whether the stage reads captions; ``joint``: the clips' joint embeddings (or None); ``melody``: add the
    window's melody."""

    def __init__(self, stage: StageSpec, window: int, captions: dict, meta_text: bool, exclude_holdout: bool = False,
                 text: bool = True, joint: ClipEmbeddings | None = None, melody: bool = False):
        self.stage, self.window, self.captions, self.meta_text = stage, window, captions, meta_text
        self.exclude_holdout = exclude_holdout
        self.text, self.joint, self.melody = text and stage.text, joint, melody

    def __call__(self, sample: dict[str, Any], rng: random.Random, offset_frac: float) -> dict | None:
        key = sample.get("__key__", "?")
        try:
            meta = json.loads(sample["json"]) if "json" in sample else {}
            if self.exclude_holdout and clip_is_holdout(meta):
                return None
            decoded = decode(sample["flac"], name=key)
        except (AudioError, KeyError, ValueError) as err:
            log.warning("skipping clip %s: %s", key, err)
            return None
        mono = content_only(downmix(decoded.samples), decoded.sample_rate, meta, self.window / self.stage.sample_rate)
        example = self.stage.example.make(mono, decoded.sample_rate, self.stage, self.window, offset_frac)
        if self.joint is not None:
            vector = self.joint.get(key)
            if vector is None:
                log.warning("skipping clip %s: the joint model has no embedding of it (it did not decode)", key)
                return None
            example["joint"] = vector
        if self.melody:
            example["melody"] = melody_window(mono, decoded.sample_rate, self.stage, self.window, offset_frac)
        meta_text = list(meta.get("text") or []) if self.meta_text else []
        items = caption_items(key, self.captions, meta_text, rng) if self.text else []
        example["text"] = sample_caption(items, rng)
        example["key"] = key
        return example


def collate(examples: list[dict], length: int, rng: random.Random | None) -> dict[str, Any]:
    """Stack examples cut to ``length`` samples of ``x0`` (random offsets with ``rng``, else centred).

    Other arrays (``[C, T_k]``) are cut at the same place in their own time base (``T_k / T_x0`` per sample), so an
    array at another rate (e.g. a spectrogram aligned with the audio) stays aligned. Vectors (``[D]``, one per
    example, e.g. the joint embedding) are stacked to ``[B, D]``.
    """
    batch: dict[str, Any] = {"key": [e["key"] for e in examples], "text": [e["text"] for e in examples]}
    fields = [k for k in examples[0] if k not in ("key", "text")]
    arrays = [k for k in fields if examples[0][k].ndim == 2]
    for k in fields:
        if examples[0][k].ndim == 1:
            batch[k] = torch.from_numpy(np.stack([e[k] for e in examples]).astype(np.float32))
    cut = []
    for e in examples:
        total = e["x0"].shape[1]
        free = total - length
        start = rng.randint(0, free) if rng is not None else free // 2
        cut.append({k: _cut(e[k], start, length, e[k].shape[1] / total) for k in arrays})
    for k in arrays:
        batch[k] = torch.from_numpy(np.stack([c[k] for c in cut]).astype(np.float32))
    return batch


def _cut(x: np.ndarray, start: int, length: int, scale: float) -> np.ndarray:
    """``x[:, start:start+length]`` in a time base ``scale`` times that of ``x0``."""
    a = int(round(start * scale))
    return x[:, a:a + int(round(length * scale))]


class TrainStream:
    """The infinite training stream of one rank and worker: disjoint samples -> shuffle -> examples -> batches."""

    def __init__(self, urls: list[str], maker: ExampleMaker, cfg: DataConfig, lengths: tuple[int, int],
                 multiple: int, seed: int, epochs: int | None = None):
        self.urls, self.maker, self.cfg, self.lengths, self.multiple = urls, maker, cfg, lengths, multiple
        self.seed, self.epochs = seed, epochs

    def batch_length(self, rng: random.Random) -> int:
        lo, hi = self.lengths
        if lo == hi:
            return hi
        return max(self.multiple, rng.randint(lo, hi) // self.multiple * self.multiple)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        rng = random.Random(f"{self.seed}:{rank}:{worker}")
        samples = disjoint_stream(self.urls, self.seed, self.epochs)
        shuffle = wds.shuffle(self.cfg.shuffle_buffer, min(64, self.cfg.shuffle_buffer), rng=random.Random(rng.random()))
        shuffled = shuffle(samples)
        pending: list[dict] = []
        for sample in shuffled:
            example = self.maker(sample, rng, rng.random())
            if example is None:
                continue
            pending.append(example)
            if len(pending) == self.cfg.batch_size:
                yield collate(pending, self.batch_length(rng), rng)
                pending = []


class _Iterable(torch.utils.data.IterableDataset):
    def __init__(self, stream: TrainStream):
        self.stream = stream

    def __iter__(self):
        return iter(self.stream)


class ShardDataModule(L.LightningDataModule):
    """Batches for one stage from ``BUILD/shards/{split}`` and ``BUILD/labels/NAME``.

    A batch: ``key`` [B] str, ``text`` [B] str, ``x0`` ``[B, 1, T]`` float32 and, for cascaders, ``lowfi`` ``[B, 1, T]``;
    with a joint-embedding ``conditioning``, ``joint`` ``[B, D]``; with its ``melody``, ``melody`` ``[B, 12, T]``.
    ``length_multiple``: the network's total stride (variable batch lengths are multiples of it).
    """

    def __init__(self, stage: StageSpec, cfg: DataConfig, length_multiple: int = 1,
                 conditioning: StageConditioning | None = None):
        super().__init__()
        self.conditioning = conditioning or StageConditioning()
        self.joint: ClipEmbeddings | None = None
        self.stage, self.cfg, self.multiple = stage, cfg, length_multiple
        window_s = cfg.window_s or stage.window_s
        self.lengths = (round(window_s[0] * stage.sample_rate), round(window_s[1] * stage.sample_rate))
        self.captions: dict[str, dict[str, list[str]]] = {}
        self.val_examples: list[dict] = []
        self.train_urls: list[str] = []
        self.valid_urls: list[str] = []

    def _captions(self, split: str | None) -> dict:
        if not (self.stage.text and self.conditioning.text and self.cfg.labels):
            return {}
        check_label_set(self.cfg.build, self.cfg.labels)
        label_dir = BuildLayout(self.cfg.build).label_dir(self.cfg.labels)
        return read_label_captions(label_dir, split)

    def setup(self, stage: str | None = None) -> None:
        """Check the data before anything trains on it (:mod:`n2m.training.data_checks`), then read captions and make the
        fixed validation set."""
        from n2m.training.data_checks import check_first_example, verify_shards, warn_if_padded

        shards = committed_shards(self.cfg.build, ["train", "valid"])
        self.train_urls = [s.tar for s in shards if s.split == "train"]
        self.valid_urls = [s.tar for s in shards if s.split == "valid"]
        if not self.train_urls:
            raise UserError(f"{BuildLayout(self.cfg.build).shard_dir('train')} has no committed shards")
        verify_shards([*self.train_urls, *self.valid_urls])
        self.captions = self._captions(None)
        if self.conditioning.audio_joint:  # text+text-embedding embeds the captions in the training step
            self.joint = self._joint_embeddings([*self.train_urls, *self.valid_urls])
        check_first_example(self.train_urls, self.maker(), self.cfg.exclude_holdout)
        warn_if_padded(self.cfg.build, "train", self.lengths[1] / self.stage.sample_rate)
        self.val_examples = self._validation_set()

    def _joint_embeddings(self, urls: list[str]) -> ClipEmbeddings:
        """Every clip's joint embedding (:mod:`n2m.training.joint_embeddings`), computed on the GPU when training uses
        one."""
        from n2m.training.joint_embeddings import clip_embeddings

        trainer = getattr(self, "trainer", None)
        device = str(trainer.strategy.root_device) if trainer is not None else "cpu"
        spec = self.conditioning
        return clip_embeddings(self.cfg.build, urls, str(spec.joint_model), str(spec.joint_model_sha1), device)

    def maker(self) -> ExampleMaker:
        return ExampleMaker(self.stage, self.lengths[1], self.captions, self.cfg.meta_text, self.cfg.exclude_holdout,
                            text=self.conditioning.text, joint=self.joint, melody=self.conditioning.melody)

    def train_stream(self, start_step: int = 0, epochs: int | None = None) -> TrainStream:
        """This process's stream; ``start_step`` reseeds it so a resumed run does not replay the same batches."""
        return TrainStream(self.train_urls, self.maker(), self.cfg, self.lengths, self.multiple,
                           seed=self.cfg.seed * 1_000_003 + start_step, epochs=epochs)

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step if self.trainer is not None else 0
        return DataLoader(_Iterable(self.train_stream(start)), batch_size=None, num_workers=self.cfg.num_workers,
                          persistent_workers=self.cfg.num_workers > 0, pin_memory=torch.cuda.is_available())

    def _validation_set(self) -> list[dict]:
        """This rank's share of the first ``val_samples`` valid clips, as fixed examples (equal count on every rank)."""
        if not self.valid_urls or self.cfg.val_samples <= 0:
            return []
        rank, world, _, _ = wds.utils.pytorch_worker_info()
        per_rank = min(self.cfg.val_samples, _count_clips(self.cfg.build, "valid")) // world
        maker = self.maker()
        length = self._val_length()
        out: list[dict] = []
        for i, sample in enumerate(read_shards(self.valid_urls)):
            if len(out) >= per_rank:
                break
            if i % world != rank:
                continue
            rng = random.Random(sample["__key__"])
            example = maker(sample, rng, 0.5)
            if example is not None:
                out.append(collate([example], length, None))
        return out

    def _val_length(self) -> int:
        lo = self.lengths[0]
        return lo if lo == self.lengths[1] else max(self.multiple, lo // self.multiple * self.multiple)

    def val_dataloader(self) -> DataLoader | list:
        if not self.val_examples:
            return []
        return DataLoader(self.val_examples, batch_size=self.cfg.batch_size, collate_fn=_concat, shuffle=False)


def _concat(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Merge single-example batches."""
    out: dict[str, Any] = {}
    for key in batches[0]:
        values = [b[key] for b in batches]
        out[key] = torch.cat(values) if isinstance(values[0], torch.Tensor) else [v for vs in values for v in vs]
    return out


def _count_clips(build: str, split: str) -> int:
    """Clips of a split from ``index.parquet``."""
    import pyarrow.compute as pc

    table = read_index(build, ["split"])
    return int(pc.sum(pc.equal(table["split"], split)).as_py() or 0)

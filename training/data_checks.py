"""What a training run checks about its data before the first step.

- every shard it will read matches its commit marker (byte count and SHA-1, :func:`n2m.layout.verify_shard`), so a
  truncated or altered tar stops the run with one line instead of silently training on part of it;
- at least one training example can be made: the stream of :mod:`n2m.training.data` is infinite and skips clips it cannot
  use, so with every clip held out (``--exclude-holdout``) or undecodable it would wait forever for a batch;
- a training window longer than most clips is reported once, with the share of zero padding it implies (a clip
  shorter than the window is zero-padded to it, :func:`n2m.training.data._fit`).
"""

from __future__ import annotations

import json
import logging
import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from n2m.errors import UserError
from n2m.layout import verify_shard
from n2m.manifest import clip_is_holdout
from n2m.progress import bar as progress_bar
from n2m.schema import read_index

log = logging.getLogger(__name__)

PADDING_WARN = 0.10  # warn when, on average, more than this share of a training window is zero padding


def verify_shards(urls: list[str]) -> None:
    """Check every shard against its marker (one streaming read each, several shards at once: SHA-1 releases the
    GIL); :class:`n2m.errors.ShardDamaged` for the first damaged one in ``urls`` order. The bar (8 shards or more)
    follows the job's ``quiet`` (:mod:`n2m.progress`)."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        checked = pool.map(verify_shard, urls)
        for _ in progress_bar(checked, total=len(urls), desc="checking shards", unit="shard", leave=False,
                              disable=len(urls) < 8):
            pass


def check_first_example(urls: list[str], maker, exclude_holdout: bool) -> None:
    """Read the train shards in order until ``maker`` (a :class:`n2m.training.data.ExampleMaker`) makes one example; a
    one-line :class:`UserError` with the counts when none can be made. Costs one decoded clip when the data is usable.
    """
    from n2m.training.data import read_shards

    rng = random.Random(0)
    clips = held = 0
    for sample in read_shards(urls):
        clips += 1
        if exclude_holdout and "json" in sample and clip_is_holdout(_json(sample["json"])):
            held += 1
            continue
        if maker(sample, rng, 0.5) is not None:
            return
    if clips and held == clips:
        raise UserError(f"no training example: all {clips} train clips are held out and --exclude-holdout skips them")
    raise UserError(f"no training example: of {clips} train clips, {held} are held out and {clips - held} could not "
                    "be decoded (see the warnings above)")


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def warn_if_padded(build: str, split: str, window_s: float) -> float:
    """Mean share of a ``window_s`` training window that is zero padding over the ``split`` clips (their audio
    durations from ``index.parquet``); logs one warning with the figures above :data:`PADDING_WARN`."""
    import pyarrow.compute as pc

    table = read_index(build, ["split", "duration_s"])
    durations = table.filter(pc.equal(table["split"], split))["duration_s"].to_numpy(zero_copy_only=False)
    if durations.size == 0:
        return 0.0
    padding = float(np.mean(np.clip(1.0 - durations / window_s, 0.0, 1.0)))
    if padding > PADDING_WARN and rank_zero_only.rank == 0:
        shorter = float(np.mean(durations < window_s))
        log.warning("the training window (%.1f s) is longer than %.0f%% of the %s clips (median %.1f s): on average "
                    "%.0f%% of a window is zero padding; use a shorter --window or build longer clips",
                    window_s, 100 * shorter, split, float(np.median(durations)), 100 * padding)
    return padding

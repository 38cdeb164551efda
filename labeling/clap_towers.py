"""``n2m clap-train --text-init hf:DIR --audio-init musicnn:MODEL``: a joint model on pretrained towers (LiT-style).

The towers stay locked (:mod:`n2m.joint`), so what they give is computed once up front and cached: the musicnn
features of every 10 s window of the training and held-out clips (``[W, F]``), and the text tower's mean-pooled
vectors of each training track's texts (``[V, H]``): its caption and up to ``--text-views`` random subsets of its
tags, in random order (the keyword augmentation of :func:`n2m.labeling.clap_train.track_text`), and of every distinct tag
(the tag bank, ``[G, H]``). A training step is then two small heads on a batch of distinct tracks (one random window
each; the caption with probability ``1 - --tag-prob``, else one of the tag views) under CLAP's symmetric InfoNCE
(:func:`n2m.labeling.clap_train.clap_loss`), plus ``--tag-loss`` times SigLIP's pairwise sigmoid loss of each window
against the whole tag bank (:func:`sigmoid_tag_loss`: a tag shared by several tracks is a positive for all of them,
where InfoNCE would count it as a negative): thousands of steps per CPU minute. ``--tune-text-layers N`` also trains
the text tower's top N blocks (at ``--tune-lr``); the text tower then runs every step on the batch's texts.

The heads' input statistics (mean, standard deviation) come from the cached training features. The output is an
:mod:`n2m.joint` directory (towers copied, heads, config with towers, layers and lineage) plus ``train.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from n2m.budget import TimeBudget
from n2m.config import resolved
from n2m.errors import UserError
from n2m.joint import TowerEmbedder
from n2m.labeling.clap_train import (
    ClapTrainSettings,
    clap_loss,
    learning_rate,
    lineage,
    retrieval_metrics,
    sample_batch,
    track_tags,
    track_text,
    training_windows,
)
from n2m.models import model_dir
from n2m.progress import bar as progress_bar
from n2m.provenance import now_iso, versions
from n2m.storage import write_json

DEFAULT_TAG_PROB = 0.8
SIGLIP_INIT = (math.log(10.0), -10.0)  # SigLIP's initial log temperature and bias


def text_tower_dir(spec: str) -> Path:
    """``hf:DIR`` or ``hf:NAME`` (installed by ``n2m models fetch``) -> the folder."""
    kind, sep, name = spec.partition(":")
    if kind != "hf" or not sep or not name:
        raise UserError(f"--text-init must be hf:DIR (a transformers text encoder), got {spec!r}")
    folder = model_dir(name)
    if not (folder / "config.json").is_file():
        raise UserError(f"--text-init {spec}: {folder} has no config.json")
    return folder


def audio_tower(spec: str) -> tuple[Path, tuple[str, ...]]:
    """``musicnn:MODEL[:LAYER[+LAYER]]`` -> ``(folder, layers)`` (no layers: the architecture's default)."""
    kind, sep, rest = spec.partition(":")
    if kind != "musicnn" or not sep or not rest:
        raise UserError(f"--audio-init must be musicnn:MODEL[:LAYER[+LAYER]], got {spec!r}")
    name, _, layers = rest.partition(":")
    return model_dir(name), tuple(x for x in layers.split("+") if x)


# ---------------------------------------------------------------------------------------------------------------------
# Cached tower outputs


@torch.no_grad()
def tower_features(embedder: TowerEmbedder, windows: list[np.ndarray]) -> torch.Tensor:
    """One clip's windows -> the locked audio tower's features ``[n, F]`` float32 on the CPU."""
    return embedder.tower_audio(embedder.patches(windows)).float().cpu()


def text_views(rng: np.random.Generator, row: dict, count: int) -> list[str]:
    """A track's texts: its caption first, then up to ``count`` distinct random tag subsets."""
    views = [str(row["caption"])]
    for _ in range(count):
        text = track_text(rng, row, 1.0)
        if text not in views:
            views.append(text)
    return views


def pick_views(rng: np.random.Generator, chosen: np.ndarray, first: np.ndarray, tag_prob: float) -> np.ndarray:
    """Rows of the cached texts for the tracks ``chosen`` ``[B]``: track ``t``'s views are rows ``first[t]`` (its
    caption) to ``first[t + 1] - 1``; with probability ``tag_prob`` a uniformly drawn tag view, when it has one."""
    count = first[chosen + 1] - first[chosen]
    tags = (rng.random(len(chosen)) < tag_prob) & (count > 1)
    offsets = 1 + np.floor(rng.random(len(chosen)) * (count - 1)).astype(np.int64)
    return first[chosen] + np.where(tags, offsets, 0)


def tag_bank(tracks: list[dict]) -> tuple[list[str], torch.Tensor]:
    """The distinct tags of ``tracks`` (sorted) and their membership ``[T, G]`` float (1: track ``t`` has tag ``g``)."""
    tags_of = [set(track_tags(row)) for row in tracks]
    names = sorted(set().union(*tags_of))
    return names, torch.tensor([[float(name in tags) for name in names] for tags in tags_of]).reshape(len(tracks), -1)


def sigmoid_tag_loss(audio: torch.Tensor, tags: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, arXiv 2303.15343, eq. 1) of audio ``[B, D]`` against tag
    texts ``[G, D]`` (both normalised here), ``targets`` ``[B, G]`` in {0, 1}:
    ``-1/B * sum_ij log sigmoid(z_ij * (exp(scale) * a_i . t_j + bias))`` with ``z = 2 * target - 1``."""
    logits = scale.exp() * F.normalize(audio, dim=-1) @ F.normalize(tags, dim=-1).T + bias  # [B, G]
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / audio.shape[0]


@torch.no_grad()
def pooled_texts(embedder: TowerEmbedder, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """Texts -> the text tower's mean-pooled vectors ``[N, H]`` float32 on the CPU."""
    return torch.cat([embedder.tower_text(embedder.tokens(texts[i:i + batch_size])).float().cpu()
                      for i in range(0, len(texts), batch_size)])


# ---------------------------------------------------------------------------------------------------------------------
# The job


@dataclass
class TowerData:
    """The training set as the locked towers see it: window ``features`` ``[W, F]`` of track ``owners`` ``[W]``,
    ``tracks`` (manifest rows), the ``texts`` of every track (:func:`text_views`; track ``t``'s are rows
    ``first[t]`` .. ``first[t + 1] - 1``) and their mean-pooled tower vectors ``pooled`` ``[V, H]``; the tag bank
    (:func:`tag_bank`): ``tags`` ``[G]``, their vectors ``tag_pooled`` ``[G, H]``, ``membership`` ``[T, G]``."""

    features: torch.Tensor
    owners: np.ndarray
    tracks: list[dict]
    texts: list[str]
    first: np.ndarray
    pooled: torch.Tensor
    tags: list[str]
    tag_pooled: torch.Tensor
    membership: torch.Tensor


def run_towers(settings: ClapTrainSettings, by_source: dict[str, dict]) -> int:
    """Train the heads (and tuned text blocks) of a joint model on ``by_source``'s non-held-out tracks; save it."""
    text_dir = text_tower_dir(settings.text_init)
    audio_dir, layers = audio_tower(settings.audio_init)
    started = time.perf_counter()
    embedder = TowerEmbedder.build(text_dir, audio_dir, layers, embed_dim=settings.embed_dim, hidden=settings.head_hidden,
                                   audio_head_layers=settings.audio_head_layers, text_head_layers=settings.text_head_layers,
                                   dropout=settings.dropout, tune_text_layers=settings.tune_text_layers,
                                   names=(settings.audio_init, settings.text_init), device=settings.device, seed=settings.seed)
    features, owners, tracks, failed = training_windows(embedder, settings.build, by_source, False, tower_features)
    if len(tracks) < 2:
        raise UserError(f"only {len(tracks)} captioned training track(s) found; need at least 2")
    held = training_windows(embedder, settings.build, by_source, True, tower_features)
    rng = np.random.default_rng(settings.seed)
    views = [text_views(rng, row, settings.text_views) for row in tracks]
    texts = [text for v in views for text in v]
    tags, membership = tag_bank(tracks)
    device = embedder.device
    data = TowerData(features.to(device), owners, tracks, texts, np.cumsum([0] + [len(v) for v in views]),
                     pooled_texts(embedder, texts).to(device), tags, pooled_texts(embedder, tags).to(device),
                     membership.to(device))
    prep_s = time.perf_counter() - started
    print(f"n2m clap-train: towers {settings.audio_init} + {settings.text_init}; {len(tracks)} tracks, {len(owners)} windows "
          f"({failed} clips failed to decode), {len(texts)} texts; {len(held[2])} held-out tracks; "
          f"tower outputs in {prep_s:.1f} s")
    started = time.perf_counter()
    step, curve = train_heads(settings, embedder, data, rng)
    train_s = time.perf_counter() - started
    metrics = {"train": _retrieval(embedder, data.features, owners, tracks)}
    if held[0] is not None:
        metrics["holdout"] = _retrieval(embedder, held[0].to(embedder.device), held[1], held[2])
    out = Path(settings.out)
    made = dict(lineage(settings), created=now_iso(), steps=step, tracks=len(tracks), windows=int(len(owners)))
    embedder.save(out, lineage=made)
    write_json(str(out / "train.json"), {
        "created": made["created"], "config": resolved(settings), "steps": step, "train_s": round(train_s, 1),
        "features_s": round(prep_s, 1), "tracks": len(tracks), "windows": int(len(owners)), "texts": len(texts),
        "failed_clips": failed, "holdout_tracks": len(held[2]), "metrics": metrics, "curve": curve,
        "lineage": dict(made, towers={"audio": embedder.config["audio"], "text": embedder.config["text"]}),
        "versions": versions(("tokenizers", "safetensors")),
    })
    hold = metrics.get("holdout", {})
    print(f"n2m clap-train: {step} steps in {train_s:.0f} s; train R@1 {metrics['train']['r_at_1']:.2f}"
          + (f", held-out R@1 {hold['r_at_1']:.2f} (chance {hold['chance_r_at_1']:.2f})" if hold else "")
          + f"; wrote {out}")
    return 0


def train_heads(settings: ClapTrainSettings, embedder: TowerEmbedder, data: TowerData,
                rng: np.random.Generator) -> tuple[int, list[dict]]:
    """The training loop (module docstring) until ``--max-steps`` or ``--minutes``; returns ``(steps, curve)`` and
    leaves the model in eval mode. Without tuned tower blocks and without ``--threads`` it runs on one CPU thread:
    the heads are too small for more threads to pay (on a busy 2-core machine two threads ran 20x slower)."""
    model = embedder.model
    model.audio_head.set_statistics(data.features)
    model.text_head.set_statistics(data.pooled)
    tuned = [p for p in model.text_tower.parameters() if p.requires_grad]
    heads = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith("text_tower.")]
    use_tags = settings.tag_loss > 0 and bool(data.tags)
    siglip = ([torch.nn.Parameter(torch.tensor(v, device=embedder.device)) for v in SIGLIP_INIT] if use_tags
              else [])  # the tag loss's temperature and bias: trained here, not part of the model
    groups = ([{"params": heads + siglip, "peak": settings.lr or 1e-3}]
              + ([{"params": tuned, "peak": settings.tune_lr}] if tuned else []))
    optimiser = torch.optim.AdamW(groups, lr=groups[0]["peak"], weight_decay=settings.weight_decay)
    by_track = [np.flatnonzero(data.owners == t) for t in range(len(data.tracks))]
    tag_prob = DEFAULT_TAG_PROB if settings.tag_prob is None else settings.tag_prob
    threads = torch.get_num_threads()
    if not tuned and not settings.threads:
        torch.set_num_threads(1)
    model.train()
    budget = TimeBudget(settings.minutes)
    budget.start()
    curve, step = [], 0
    try:
        with progress_bar(total=settings.max_steps, desc="clap-train", unit="step") as bar:
            while step < settings.max_steps and not budget.spent():
                picks = sample_batch(rng, data.owners, by_track, settings.batch_size)
                rows = pick_views(rng, data.owners[picks], data.first, tag_prob)
                progress = budget.progress(step, settings.max_steps)
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate(step, group["peak"], settings.warmup, progress)
                text_in = (embedder.tower_text(embedder.tokens([data.texts[r] for r in rows])) if tuned
                           else data.pooled[torch.as_tensor(rows, device=embedder.device)])
                audio = model.audio_head(data.features[torch.as_tensor(picks, device=embedder.device)])
                loss, accuracy = clap_loss(model, audio, model.text_head(text_in))
                if use_tags:
                    tag_in = embedder.tower_text(embedder.tokens(data.tags)) if tuned else data.tag_pooled
                    targets = data.membership[torch.as_tensor(data.owners[picks], device=embedder.device)]
                    loss = loss + settings.tag_loss * sigmoid_tag_loss(audio, model.text_head(tag_in), targets, *siglip)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
                optimiser.step()
                step += 1
                if step % 25 == 0 or step == 1:
                    curve.append({"step": step, "loss": round(loss.item(), 4), "batch_acc": round(accuracy, 3)})
                    bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
        model.eval()
    return step, curve


@torch.no_grad()
def _retrieval(embedder: TowerEmbedder, features: torch.Tensor, owners: np.ndarray, tracks: list[dict]) -> dict:
    raw = embedder.model.audio_head(features).float().cpu().numpy()  # [W, D]
    return retrieval_metrics(embedder, raw, owners, tracks)

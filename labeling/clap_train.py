"""``n2m clap-train``: contrastive training of a small CLAP on clips whose true captions are known.

No pretrained CLAP can be downloaded here, so the embedded default trains one: a ``tiny`` preset
(:mod:`n2m.labeling.presets`; a byte-level BPE tokenizer trained on the captions) or, with ``--joint-model DIR``, a real CLAP
directory fine-tuned on the user's labelled data. With ``--text-init hf:DIR --audio-init musicnn:MODEL`` it joins two
pretrained towers instead (LiT-style; :mod:`n2m.labeling.clap_towers`, :mod:`n2m.joint`). The objective is CLAP's
symmetric InfoNCE with learnable temperatures (Radford et al. 2021, CLIP; Wu et al. 2023, CLAP, arXiv 2211.06687):
``L = (CE(s_a * A T^T, I) + CE(s_t * T A^T, I)) / 2`` over a batch of distinct tracks, ``A``/``T`` the L2-normalised
projections and ``s = exp(logit_scale)`` clamped at 100.

Data: captions come from a manifest (``caption`` column) joined to the build's clips through ``sources.parquet``
(:mod:`n2m.labeling.truth`); tracks marked ``holdout: true`` are never trained on (they measure the result). Every clip is
cut into 10 s windows by the same rule as :mod:`n2m.clap`, and the windows' mel features are computed once up front,
so a training step is two tower forwards. The output directory is a transformers CLAP that
:meth:`n2m.clap.ClapEmbedder.from_pretrained` loads like a LAION model, plus ``train.json`` (config, lineage, curve).

The job is :func:`run_clap_train` of :class:`ClapTrainSettings` (the command line: :mod:`n2m.labeling.clap_train_cli`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from n2m.audio import AudioError, decode
from n2m.budget import TimeBudget
from n2m.clap import ClapEmbedder, HFClapEmbedder, l2_normalise
from n2m.config import resolved
from n2m.errors import UserError
from n2m.labeling.embed import read_samples
from n2m.labeling.presets import build_clap, get_preset, save_clap
from n2m.labeling.truth import join_sources
from n2m.layout import BuildLayout, verify_shard
from n2m.manifest import is_holdout
from n2m.progress import bar as progress_bar
from n2m.progress import honours_quiet
from n2m.provenance import file_hash, now_iso, versions
from n2m.schema import read_index
from n2m.storage import write_json

MAX_LOGIT_SCALE = math.log(100.0)
TAG_LOSS = 0.3  # synthetic 40-track corpus, 8 seeds: held-out instrument precision 3.3x -> 4.1x chance, mood 17x -> 34x


@dataclass(frozen=True, kw_only=True)
class ClapTrainSettings:
    """What ``n2m clap-train`` does: one field per option (``n2m clap-train --help`` says what each means). ``init``
    (``--joint-model``): the CLAP folder to fine-tune; ``text_init`` and ``audio_init`` (both or neither): the
    pretrained towers of a joint model (:mod:`n2m.labeling.clap_towers`), with the fields after them. ``lr`` and
    ``tag_prob`` default by route (module docstring and ``--help``)."""

    build: str
    captions: str
    out: str
    preset: str = "tiny"
    init: str | None = None
    max_steps: int = 3000
    minutes: float = 5.0
    batch_size: int = 32
    lr: float | None = None
    weight_decay: float = 0.01
    warmup: int = 100
    tag_prob: float | None = None
    seed: int = 0
    device: str = "cpu"
    threads: int = 0
    overwrite: bool = False
    text_init: str | None = None
    audio_init: str | None = None
    text_head_layers: int = 0
    audio_head_layers: int = 2
    head_hidden: int = 512
    embed_dim: int | None = None
    dropout: float = 0.1
    text_views: int = 16
    tag_loss: float = TAG_LOSS
    tune_text_layers: int = 0
    tune_lr: float = 2e-5
    quiet: bool = False

    def __post_init__(self) -> None:
        get_preset(self.preset)
        given = [flag for flag, value in (("--text-init", self.text_init), ("--audio-init", self.audio_init)) if value]
        if len(given) == 1:
            raise UserError(f"{given[0]} needs its partner: give both --text-init hf:DIR and --audio-init musicnn:MODEL")
        if given and self.init:
            raise UserError("--joint-model fine-tunes a CLAP directory; it does not combine with --text-init/--audio-init")

    @property
    def towers(self) -> bool:
        """Whether this run joins pretrained towers (``text_init`` and ``audio_init``)."""
        return bool(self.text_init and self.audio_init)


# ---------------------------------------------------------------------------------------------------------------------
# Data


def mel_features(embedder: HFClapEmbedder, windows: list[np.ndarray]) -> torch.Tensor:
    """A CLAP's log-mel inputs of windows, ``[n, C, F, M]`` float16 on the CPU (what the from-scratch route caches)."""
    return embedder.features(windows)["input_features"].to(torch.float16).cpu()


def training_windows(embedder: ClapEmbedder, build: str, by_source: dict[str, dict], holdout: bool,
                     featurize: Callable[[ClapEmbedder, list[np.ndarray]], torch.Tensor] = mel_features):
    """Features of every window of the matched clips: ``(features [W, ...], track [W] int, tracks, failed clips)``.

    Windows are cut by the embedder's rule (:meth:`n2m.clap.ClapEmbedder.prepare`); ``featurize`` maps one clip's
    windows to their cached features (default :func:`mel_features`). ``holdout`` selects the held-out tracks (True)
    or the training tracks (False). ``tracks`` lists the manifest rows, indexed by ``track``.
    """
    layout = BuildLayout(build)
    index = read_index(build, ["key", "source_id", "split", "shard"]).to_pylist()
    wanted = {r["key"]: r for r in index
              if r["source_id"] in by_source and is_holdout(by_source[r["source_id"]]) == holdout
              and str(by_source[r["source_id"]].get("caption") or "").strip()}
    shards = sorted({(r["split"], r["shard"]) for r in wanted.values()})
    track_ids: dict[str, int] = {}
    tracks: list[dict] = []
    features, owners, failed = [], [], 0
    for split, shard in progress_bar(shards, desc="features", unit="shard", leave=False):
        tar = f"{layout.shard_dir(split)}/{shard}"
        verify_shard(tar)
        for key, members in read_samples(tar):
            if key not in wanted or "flac" not in members:
                continue
            try:
                decoded = decode(members["flac"], name=key)
            except AudioError:
                failed += 1
                continue
            sid = wanted[key]["source_id"]
            if sid not in track_ids:
                track_ids[sid] = len(tracks)
                tracks.append(by_source[sid])
            feats = featurize(embedder, embedder.prepare(decoded.samples, decoded.sample_rate))
            features.append(feats)
            owners.extend([track_ids[sid]] * feats.shape[0])
    if not features:
        return None, np.zeros(0, np.int64), tracks, failed
    return torch.cat(features), np.asarray(owners, np.int64), tracks, failed


# ---------------------------------------------------------------------------------------------------------------------
# Model and loss


def raw_towers(model, features: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Projected (un-normalised) audio ``[B, D]`` and text ``[B, D]`` embeddings, with gradients."""
    audio = model.audio_projection(model.audio_model(input_features=features).pooler_output)
    text = model.text_projection(model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output)
    return audio, text


def clap_loss(model, audio: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric InfoNCE (module docstring); returns ``(loss, batch accuracy audio -> text)``."""
    a, t = F.normalize(audio, dim=-1), F.normalize(text, dim=-1)
    logits_a = model.logit_scale_a.clamp(max=MAX_LOGIT_SCALE).exp() * a @ t.T  # [B, B]
    logits_t = model.logit_scale_t.clamp(max=MAX_LOGIT_SCALE).exp() * t @ a.T
    target = torch.arange(a.shape[0], device=a.device)
    loss = (F.cross_entropy(logits_a, target) + F.cross_entropy(logits_t, target)) / 2
    accuracy = (logits_a.argmax(dim=1) == target).float().mean().item()
    return loss, accuracy


def track_tags(row: dict) -> list[str]:
    """A manifest row's non-blank ``tags`` (none when the column is missing or not a list)."""
    return [str(t) for t in (row.get("tags") or []) if str(t).strip()] if isinstance(row.get("tags"), list) else []


def track_text(rng: np.random.Generator, row: dict, tag_prob: float) -> str:
    """The text paired with a track this step: its caption, or (``tag_prob``) a shuffled subset of its tags."""
    tags = track_tags(row)
    if tags and rng.random() < tag_prob:
        chosen = rng.choice(len(tags), size=rng.integers(1, len(tags) + 1), replace=False)
        return ", ".join(tags[i] for i in chosen)
    return str(row["caption"])


def learning_rate(step: int, peak: float, warmup: int, progress: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 10% of the peak as ``progress`` goes 0 -> 1
    (progress: the larger of the step and time budgets used, so ``--minutes`` runs decay too)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress)))))


def sample_batch(rng: np.random.Generator, owners: np.ndarray, by_track: list[np.ndarray], size: int) -> np.ndarray:
    """Window indices of ``size`` distinct tracks, one random window each (no false negatives in a batch)."""
    chosen = rng.choice(len(by_track), size=min(size, len(by_track)), replace=False)
    return np.array([rng.choice(by_track[t]) for t in chosen])


@torch.no_grad()
def retrieval(embedder: HFClapEmbedder, features: torch.Tensor, owners: np.ndarray, tracks: list[dict]) -> dict:
    """:func:`retrieval_metrics` of a CLAP from its cached mel features."""
    if not tracks:
        return {}
    model = embedder.model.eval()
    raw = torch.cat([model.audio_projection(model.audio_model(
        input_features=features[i:i + 32].to(embedder.device, torch.float32)).pooler_output).cpu()
        for i in range(0, len(features), 32)]).numpy()
    return retrieval_metrics(embedder, raw, owners, tracks)


def retrieval_metrics(embedder: ClapEmbedder, raw: np.ndarray, owners: np.ndarray, tracks: list[dict]) -> dict:
    """Track-level audio -> caption retrieval (R@1, R@5 and chance) from raw window embeddings ``[W, D]``, with the
    clip rule (a track's vector: the L2-normalised mean of its raw windows); captions through ``embed_text``."""
    audio = l2_normalise(np.stack([raw[owners == t].mean(axis=0) for t in range(len(tracks))]))
    text = embedder.embed_text([str(r["caption"]) for r in tracks])
    ranks = np.argsort(-(audio @ text.T), axis=1)
    hits = ranks == np.arange(len(tracks))[:, None]
    return {"tracks": len(tracks), "r_at_1": float(hits[:, :1].any(1).mean()), "r_at_5": float(hits[:, :5].any(1).mean()),
            "chance_r_at_1": 1.0 / len(tracks)}


# ---------------------------------------------------------------------------------------------------------------------
# The job


def _embedder(settings: ClapTrainSettings, captions: list[str]) -> HFClapEmbedder:
    if settings.init:
        embedder = ClapEmbedder.from_pretrained(settings.init, device=settings.device)
        if not isinstance(embedder, HFClapEmbedder):
            raise UserError(f"--joint-model {settings.init} is a joint model on pretrained towers; fine-tuning one is not "
                            "supported (train a new one with --text-init/--audio-init)")
        return embedder
    model, features, tokenizer = build_clap(get_preset(settings.preset), captions, seed=settings.seed)
    return HFClapEmbedder(model, features, tokenizer, model_id=f"untrained-{settings.preset}", path="", device=settings.device)


def lineage(settings: ClapTrainSettings) -> dict:
    """What a trained model was made from (recorded in ``train.json``, and in a joint model's ``config.json``)."""
    return {"build": str(Path(settings.build).resolve()), "captions": str(Path(settings.captions).resolve()),
            "captions_sha1": file_hash(settings.captions), "holdout_excluded": True, "seed": settings.seed}


@honours_quiet
def run_clap_train(settings: ClapTrainSettings) -> int:
    """Train (from scratch, by fine-tuning, or the heads on pretrained towers); write the model and ``train.json``;
    print a summary with the train and held-out retrieval."""
    from n2m.labeling.clap_towers import run_towers

    out = Path(settings.out)
    if out.exists() and any(out.iterdir()) and not settings.overwrite:
        raise UserError(f"{out} is not empty (use --overwrite to replace it)")
    if settings.threads:
        torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    by_source = join_sources(settings.build, settings.captions)
    if not by_source:
        raise UserError(f"no source of {settings.build} matches a row of {settings.captions} (paths differ?)")
    if settings.towers:
        return run_towers(settings, by_source)
    train_rows = [r for r in by_source.values() if not is_holdout(r) and str(r.get("caption") or "").strip()]
    embedder = _embedder(settings, [str(r["caption"]) for r in train_rows])
    started = time.perf_counter()
    features, owners, tracks, failed = training_windows(embedder, settings.build, by_source, holdout=False)
    if len(tracks) < 2:
        raise UserError(f"only {len(tracks)} captioned training track(s) found; need at least 2")
    held = training_windows(embedder, settings.build, by_source, holdout=True)
    prep_s = time.perf_counter() - started
    max_len = int(min(embedder.tokenizer.model_max_length or 64, embedder.model.config.text_config.max_position_embeddings - 2))
    by_track = [np.flatnonzero(owners == t) for t in range(len(tracks))]
    model = embedder.model.to(embedder.device).train()
    lr = settings.lr if settings.lr is not None else (1e-5 if settings.init else 1e-3)
    tag_prob = 0.5 if settings.tag_prob is None else settings.tag_prob
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=settings.weight_decay)
    rng = np.random.default_rng(settings.seed)
    budget = TimeBudget(settings.minutes)
    budget.start()
    curve, step, train_started = [], 0, time.perf_counter()
    print(f"n2m clap-train: {len(tracks)} tracks, {len(owners)} windows ({failed} clips failed to decode); "
          f"{len(held[2])} held-out tracks; features in {prep_s:.1f} s")
    with progress_bar(total=settings.max_steps, desc="clap-train", unit="step") as bar:
        while step < settings.max_steps and not budget.spent():
            picks = sample_batch(rng, owners, by_track, settings.batch_size)
            texts = [track_text(rng, tracks[t], tag_prob) for t in owners[picks]]
            tokens = embedder.tokenizer(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
            feats = features[picks].to(embedder.device, torch.float32)
            progress = budget.progress(step, settings.max_steps)
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(step, lr, settings.warmup, progress)
            audio, text = raw_towers(model, feats, tokens["input_ids"].to(embedder.device),
                                     tokens["attention_mask"].to(embedder.device))
            loss, accuracy = clap_loss(model, audio, text)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            step += 1
            if step % 25 == 0 or step == 1:
                curve.append({"step": step, "loss": round(loss.item(), 4), "batch_acc": round(accuracy, 3)})
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.2f}")
            bar.update(1)
    train_s = time.perf_counter() - train_started
    metrics = {"train": retrieval(embedder, features, owners, tracks)}
    if held[0] is not None:
        metrics["holdout"] = retrieval(embedder, held[0], held[1], held[2])
    save_clap(out, model.eval(), embedder.feature_extractor, embedder.tokenizer)
    record = {
        "created": now_iso(), "config": resolved(settings), "steps": step, "train_s": round(train_s, 1),
        "features_s": round(prep_s, 1), "tracks": len(tracks), "windows": int(len(owners)), "failed_clips": failed,
        "holdout_tracks": len(held[2]), "metrics": metrics, "curve": curve,
        "lineage": dict(lineage(settings), init=settings.init, init_sha1=embedder.model_id if settings.init else None),
        "versions": versions(("tokenizers",)),
    }
    write_json(str(out / "train.json"), record)
    hold = metrics.get("holdout", {})
    print(f"n2m clap-train: {step} steps in {train_s:.0f} s; train R@1 {metrics['train']['r_at_1']:.2f}"
          + (f", held-out R@1 {hold['r_at_1']:.2f} (chance {hold['chance_r_at_1']:.2f})" if hold else "")
          + f"; wrote {out}")
    return 0

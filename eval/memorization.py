"""``n2m eval memorization``: does a model reproduce its training clips?

For every generated clip: its nearest training clips by an alignment-robust audio match (chroma frames
cross-correlated over all time offsets) and by embedding (musicnn by default, or ``clap:DIR``), each view with a
threshold calibrated on held-out real clips of the same build (:mod:`n2m.eval.memorization_match`), the share of generated
clips above each, and the matches side by side in the HTML page. Like the memorization study of MusicLM (Agostinelli
et al. 2023, section 6), it asks whether outputs sit closer to a training example than unseen music does.

A clip is **flagged** (memorized) by the audio match alone: it needs the same pitch content frame by frame at one
offset, which a copy keeps through time shifts and lossy re-encoding and a new piece does not. The embedding view
summarises a whole clip's style: music of the same style and instruments is near in it without sharing a bar (on the
synthetic corpus, unseen tracks of a training track's style exceed the held-out maximum), so its share is reported as
closeness in style, and its neighbours are listed to listen to, not counted as copies.

With audio prompts (``--prompts-audio DIR``, or an ``audio_prompt`` named in a sample's JSON sidecar), it also measures
how close each clip is to its prompt against the training clips, after MusicGen-Style's nearest-neighbour view of style
transfer vs copying (Rouard et al. 2024, section 5): a clip should be nearer its prompt than any training clip (it
follows the prompt), without matching it as a copy would.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2m.config import resolved
from n2m.errors import UserError
from n2m.eval import report as reports
from n2m.eval.audio_sets import EmbeddedSet, Preprocess, by_id, embed_files, list_audio
from n2m.eval.memorization_match import (
    MATCH_FRAME_RATE,
    BuildClip,
    MatchFrames,
    Threshold,
    conformal_threshold,
    cosine_scores,
    match_scores,
    open_shard,
)
from n2m.eval.options import EmbeddingSettings, OutputSettings, cache_root, embedding_options, model_info, out_dir
from n2m.layout import BuildLayout, Shard, build_id, committed_shards
from n2m.progress import bar as progress_bar
from n2m.progress import honours_quiet
from n2m.schema import read_index, read_sidecar
from n2m.storage import exists

VIEWS = ("match", "embedding")
NO_HELDOUT = ("the build has no held-out clips to calibrate the thresholds on: build it with a split besides the "
              "training splits (n2m build --split train=0.9,valid=0.1), mark held-out tracks and pass "
              "--exclude-holdout, or give --match-threshold and --embedding-threshold")


# ---------------------------------------------------------------------------------------------------------------------
# Reading the build: features of every clip, by role


class BuildFeatures:
    """Match frames and embedding vectors of the build's clips, split into ``train`` and ``heldout``."""

    def __init__(self) -> None:
        self.clips: dict[str, list[BuildClip]] = {"train": [], "heldout": []}
        self.frames: dict[str, list[np.ndarray]] = {"train": [], "heldout": []}
        self.vectors: dict[str, list[np.ndarray | None]] = {"train": [], "heldout": []}
        self.failures: Counter = Counter()
        self.shards = 0
        self.cache_hits = 0

    def summary(self) -> dict[str, Any]:
        """The build's clips in the shape of :meth:`n2m.eval.audio_sets.EmbeddedSet.summary` (excluded: undecodable)."""
        used = sum(len(c) for c in self.clips.values())
        return {"files": used + sum(self.failures.values()), "used": used, "excluded": sum(self.failures.values()),
                "excluded_by_reason": dict(sorted(self.failures.items())), "cache_hits": self.cache_hits}

    def add(self, shard, match: EmbeddedSet, embedded: EmbeddedSet) -> None:
        frames, vectors = dict(zip(match.ids, match.frames)), embedded.clips_by_id()
        self.failures.update(f.reason for f in match.failures)
        self.cache_hits += match.cache_hits + embedded.cache_hits
        for clip in shard.clips:
            if clip.key in frames:
                self.clips[clip.role].append(clip)
                self.frames[clip.role].append(frames[clip.key])
                self.vectors[clip.role].append(vectors.get(clip.key))


@dataclass(frozen=True, kw_only=True)
class MemorizationSettings(EmbeddingSettings, OutputSettings):
    """``n2m eval memorization``: the ``generated`` clips against the training clips of ``build`` (its
    ``train_splits``, less the held-out clips with ``exclude_holdout``) by ``embedding`` and by the audio match; the
    thresholds calibrated on ``calibration_clips`` held-out clips at false-positive rate ``alpha`` unless fixed
    (``match_threshold``, ``embedding_threshold``); ``neighbours`` listed per view; ``prompts_audio``: the audio
    prompts, when not named by the sidecars."""

    generated: list[str]
    build: str
    embedding: str = "musicnn"
    prompts_audio: str | None = None
    train_splits: str = "train"
    exclude_holdout: bool = False
    alpha: float = 0.01
    calibration_clips: int = 500
    match_threshold: float | None = None
    embedding_threshold: float | None = None
    neighbours: int = 3


def build_shards(settings: MemorizationSettings, train_splits: set[str]) -> list[Shard]:
    """The committed shards of ``--build``, refused up front when it is no build or has none, or (from the splits in
    its ``index.parquet``) when no split is a training split or nothing is left to calibrate the thresholds on."""
    if not exists(BuildLayout(settings.build).build_json):
        raise UserError(f"{settings.build} is not an n2m build (no build.json; make one with n2m build)")
    shards = committed_shards(settings.build)
    if not shards:
        raise UserError(f"build {settings.build} has no committed shards")
    splits = set(read_index(settings.build, ["split"]).column("split").to_pylist())
    if not splits & train_splits:
        raise UserError(f"build {settings.build} has no training clips: its splits are {', '.join(sorted(splits))}, "
                        f"--train-splits names {', '.join(sorted(train_splits))}")
    needs_heldout = settings.match_threshold is None or settings.embedding_threshold is None
    if needs_heldout and splits <= train_splits and not settings.exclude_holdout:
        raise UserError(NO_HELDOUT)
    return shards


def read_build(build: str, shards: list[Shard], train_splits: set[str], exclude_holdout: bool, embedder,
               preprocess: Preprocess, cache) -> BuildFeatures:
    """Every committed shard, checked against its marker, extracted one at a time and embedded twice."""
    out = BuildFeatures()
    match = MatchFrames()
    for committed in progress_bar(shards, desc="build shards", unit="shard", leave=False):
        with open_shard(committed.split, committed.tar, train_splits, exclude_holdout) as shard:
            out.add(shard, embed_files(shard.files, match, preprocess, cache, progress=False),
                    embed_files(shard.files, embedder, preprocess, cache, progress=False))
        out.shards += 1
    if not out.clips["train"]:
        raise UserError(f"build {build} has no training clips in split(s) {', '.join(sorted(train_splits))}"
                        + (" that are not marked held out" if exclude_holdout else ""))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Scoring the generated clips


def _vectors(rows: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Stack the available vectors; also return the indices that have one."""
    have = np.array([i for i, v in enumerate(rows) if v is not None], np.int64)
    return (np.stack([rows[i] for i in have]) if len(have) else np.zeros((0, 0))), have


def view_scores(query_frames: list[np.ndarray], query_vectors: list[np.ndarray | None], data: BuildFeatures
                ) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Scores of the queries against every training clip: ``{view: (scores [Q, R], lags [Q, R] or None)}``; a query
    without an embedding has ``nan`` scores in that view."""
    match, lags = match_scores(query_frames, data.frames["train"])
    train, train_rows = _vectors(data.vectors["train"])
    queries, rows = _vectors(query_vectors)
    embedding = np.full((len(query_vectors), len(data.clips["train"])), np.nan)
    if len(train_rows) and len(rows):
        embedding[np.ix_(rows, train_rows)] = cosine_scores(queries, train, train.mean(axis=0))
    return {"match": (match, lags), "embedding": (embedding, None)}


def thresholds(data: BuildFeatures, settings: MemorizationSettings, rng: np.random.Generator
               ) -> tuple[dict[str, Threshold], dict[str, list[float]]]:
    """Each view's threshold: fixed by the user, else calibrated on (a seeded sample of) the held-out clips."""
    fixed = {"match": settings.match_threshold, "embedding": settings.embedding_threshold}
    count = len(data.clips["heldout"])
    if count == 0 and any(v is None for v in fixed.values()):
        raise UserError(NO_HELDOUT)
    chosen = np.sort(rng.choice(count, size=min(count, settings.calibration_clips), replace=False)) if count else []
    scores = view_scores([data.frames["heldout"][i] for i in chosen], [data.vectors["heldout"][i] for i in chosen],
                         data)
    heldout, out = {}, {}
    for view in VIEWS:
        best = np.nanmax(scores[view][0], axis=1, initial=-np.inf) if len(chosen) else np.zeros(0)
        heldout[view] = [float(v) for v in best if np.isfinite(v)]
        if fixed[view] is not None:
            out[view] = Threshold(float(fixed[view]), "fixed")
        elif heldout[view]:
            out[view] = conformal_threshold(np.asarray(heldout[view]), settings.alpha)
        else:
            raise UserError(f"no held-out clip has a {view} score to calibrate on; give --{view}-threshold")
    return out, heldout


def _neighbours(row: np.ndarray, lags: np.ndarray | None, clips: list[BuildClip], count: int) -> list[dict[str, Any]]:
    order = [int(j) for j in np.argsort(-np.nan_to_num(row, nan=-np.inf))[:count] if np.isfinite(row[j])]
    out = []
    for j in order:
        entry = {**clips[j].as_dict(), "score": float(row[j])}
        if lags is not None:
            entry["shift_s"] = float(lags[j] / MATCH_FRAME_RATE)  # the generated clip starts this far into this one
        out.append(entry)
    return out


def judge(ids: list[str], paths: dict[str, str], scores: dict, data: BuildFeatures, limits: dict[str, Threshold],
          count: int) -> list[dict[str, Any]]:
    """One record per generated clip: per view its best score, whether it exceeds the threshold, its neighbours;
    ``flagged`` (memorized) is the audio match's verdict. Flagged clips come first, then by audio match."""
    items = []
    for i, clip_id in enumerate(ids):
        views = {}
        for view in VIEWS:
            row, lags = scores[view][0][i], scores[view][1]
            best = float(np.nanmax(row)) if np.isfinite(row).any() else None
            views[view] = {"score": best, "flagged": best is not None and best > limits[view].value,
                           "nearest": _neighbours(row, None if lags is None else lags[i], data.clips["train"], count)}
        items.append({"id": clip_id, "path": paths[clip_id], "views": views, "flagged": views["match"]["flagged"]})
    match = [it["views"]["match"]["score"] for it in items]
    order = sorted(range(len(items)), key=lambda i: (not items[i]["flagged"], -(match[i] if match[i] is not None
                                                                                 else -np.inf)))
    return [items[i] for i in order]


# ---------------------------------------------------------------------------------------------------------------------
# Audio prompts (MusicGen-Style): close to the prompt, not a copy of it


def prompt_paths(generated: list[Path], prompts_dir: str | None) -> dict[str, Path]:
    """Generated id -> its audio prompt: a file of ``--prompts-audio`` named by the id (or by the sidecar's
    ``prompt_id``), else the ``audio_prompt`` path in the sample's JSON sidecar (relative to the sidecar)."""
    given = by_id(list_audio(prompts_dir)) if prompts_dir else {}
    out = {}
    for path in generated:
        sidecar = _sidecar(path)
        named = sidecar.get("audio_prompt")
        named = named.get("path") if isinstance(named, dict) else named
        if path.stem in given or str(sidecar.get("prompt_id")) in given:
            out[path.stem] = given.get(path.stem) or given[str(sidecar.get("prompt_id"))]
        elif isinstance(named, str) and named:
            out[path.stem] = (path.parent / named) if not Path(named).is_absolute() else Path(named)
    missing = sorted(str(p) for p in set(out.values()) if not p.is_file())
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise UserError(f"audio prompt not found: {missing[0]}{more}")
    return out


def _sidecar(path: Path) -> dict[str, Any]:
    """The clip's sidecar (:func:`n2m.schema.read_sidecar`); empty when it has none or it cannot be read."""
    try:
        return read_sidecar(path) or {}
    except (OSError, ValueError):
        return {}


def prompt_section(items: list[dict], prompts: dict[str, Path], gen: dict[str, Any], embedder,
                   preprocess: Preprocess, cache, limits: dict[str, Threshold]) -> dict[str, Any]:
    """Per prompted clip: match and embedding similarity to its prompt vs its best training clip; the shares that
    are nearer their prompt than any training clip, and that match their prompt above the copy threshold."""
    files = sorted(set(prompts.values()))
    match = embed_files(files, MatchFrames(), preprocess, cache, desc="prompts: match")
    embedded = embed_files(files, embedder, preprocess, cache, desc="prompts: embedding")
    p_frames, p_vectors = dict(zip(match.paths, match.frames)), dict(zip(embedded.paths, embedded.clips))
    rows, centre = [], gen["centre"]
    for item in items:
        path = prompts.get(item["id"])
        frames, vector = gen["frames"].get(item["id"]), gen["vectors"].get(item["id"])
        if path is None or frames is None or str(path) not in p_frames:
            continue
        entry = {"path": str(path), "match": float(match_scores([frames], [p_frames[str(path)]])[0][0, 0])}
        if vector is not None and str(path) in p_vectors and centre is not None:
            entry["embedding"] = float(cosine_scores(vector[None], p_vectors[str(path)][None], centre)[0, 0])
        for view in VIEWS:
            train_best = item["views"][view]["score"]
            if view in entry and train_best is not None:
                entry[f"{view}_nearer_than_training"] = entry[view] > train_best
        entry["copies_prompt"] = entry["match"] > limits["match"].value
        item["prompt"] = entry
        rows.append(entry)
    shares = {key: _share([r[key] for r in rows if key in r]) for key in
              ("embedding_nearer_than_training", "match_nearer_than_training", "copies_prompt")}
    return {"clips": len(rows), "excluded_prompts": [f.as_dict() for f in match.failures], "shares": shares}


def _share(flags: list[bool]) -> dict[str, Any]:
    """Share of True with its 95% Clopper-Pearson interval."""
    if not flags:
        return {"value": None, "n": 0, "low": None, "high": None}
    import scipy.stats

    hits, n = int(sum(flags)), len(flags)
    ci = scipy.stats.binomtest(hits, n).proportion_ci(0.95, method="exact")
    return {"value": hits / n, "n": n, "low": float(ci.low), "high": float(ci.high)}


# ---------------------------------------------------------------------------------------------------------------------
# The job


@honours_quiet
def run_memorization(settings: MemorizationSettings) -> int:
    """Score every generated clip against the training clips in both views, flag those above the thresholds; the
    report and its listening page."""
    from n2m.eval import embeddings
    from n2m.eval.memorization_page import finish, listen_items

    generated = list_audio(settings.generated)
    by_id(generated)
    if not generated:
        raise UserError("no generated audio files found")
    train_splits = {s.strip() for s in settings.train_splits.split(",") if s.strip()}
    if not train_splits:
        raise UserError("--train-splits names no split")
    out = out_dir(settings, "memorization")
    shards = build_shards(settings, train_splits)
    prompts = prompt_paths(generated, settings.prompts_audio)
    embedder = embeddings.load(settings.embedding, embedding_options(settings))
    cache, rng = cache_root(settings), np.random.default_rng(settings.seed)
    preprocess = Preprocess(settings.crop_seconds, settings.band_rate)  # every clip of every set, both views
    report = reports.base_report("memorization", out.name, resolved(settings))
    report.update(models={"match": model_info(MatchFrames()), embedder.name: model_info(embedder)}, warnings=[],
                  lineage=reports.lineage(generated), preprocess=preprocess.as_dict())
    gen_match = embed_files(generated, MatchFrames(), preprocess, cache, desc="generated: match")
    gen_embedded = embed_files(generated, embedder, preprocess, cache, desc=f"generated: {embedder.name}")
    data = read_build(settings.build, shards, train_splits, settings.exclude_holdout, embedder, preprocess, cache)
    limits, heldout = thresholds(data, settings, rng)

    ids, vectors = gen_match.ids, gen_embedded.clips_by_id()
    paths = dict(zip(gen_match.ids, gen_match.paths))
    scores = view_scores(gen_match.frames, [vectors.get(i) for i in ids], data)
    items = judge(ids, paths, scores, data, limits, settings.neighbours)
    train_vectors, _ = _vectors(data.vectors["train"])
    gen = {"frames": dict(zip(ids, gen_match.frames)), "vectors": vectors,
           "centre": train_vectors.mean(axis=0) if len(train_vectors) else None}
    section = prompt_section(items, prompts, gen, embedder, preprocess, cache, limits) if prompts else None

    report["sets"] = {"generated (match)": gen_match.summary(), f"generated ({embedder.name})": gen_embedded.summary(),
                      "build clips": data.summary()}
    report["build"] = {"path": settings.build, "id": build_id(settings.build), "train_splits": sorted(train_splits),
                       "exclude_holdout": bool(settings.exclude_holdout), "shards": data.shards,
                       "training_clips": len(data.clips["train"]), "heldout_clips": len(data.clips["heldout"])}
    report["memorization"] = {"thresholds": {v: limits[v].as_dict() for v in VIEWS}, "heldout_scores": heldout,
                              "items": items, "prompts": section}
    report["metrics"].update(_metrics(items, limits, section, embedder.name))
    report["warnings"] += _warnings(report, data, gen_match, limits)
    return finish(report, out, listen_items(items, settings.samples), settings.build)


def _metrics(items: list[dict], limits: dict[str, Threshold], prompts: dict | None, embedding: str) -> dict:
    rows = {}
    for key, label, flags in (
            ("memorized", "audio match above its threshold", [it["flagged"] for it in items]),
            (f"near in style ({embedding})", f"{embedding} cosine above its threshold (not counted as copies)",
             [it["views"]["embedding"]["flagged"] for it in items if it["views"]["embedding"]["score"] is not None])):
        share = _share(flags)
        rows[f"{key}: share of generated clips"] = reports.metric(share["value"], share["n"], share["low"],
                                                                  share["high"], note=label)
    for view in VIEWS:
        t = limits[view]
        note = (f"rank {t.rank} of {t.n} held-out clips' best scores; false-positive bound {t.bound:.3g}"
                if t.source == "calibrated" else "fixed by the user")
        rows[f"{view} threshold"] = reports.metric(t.value, t.n or None, note=note)
    for key, label in (("embedding_nearer_than_training", "prompted clips nearer their prompt than any training clip "
                                                           "(embedding)"),
                       ("copies_prompt", "prompted clips that copy their prompt (audio match)")):
        share = (prompts or {}).get("shares", {}).get(key)
        if share and share["n"]:
            rows[label] = reports.metric(share["value"], share["n"], share["low"], share["high"])
    return rows


def _warnings(report: dict, data: BuildFeatures, gen_match: EmbeddedSet, limits: dict[str, Threshold]) -> list[str]:
    out = []
    for view, t in limits.items():
        if t.source == "calibrated" and t.bound is not None and t.bound > 0.05:
            out.append(f"only {t.n} held-out clips calibrate the {view} threshold: a clip that copies nothing is "
                       f"flagged with probability up to {t.bound:.2f}; hold out more tracks")
    built = [str(b) for value in report["lineage"]["values"].get("lineage", []) if isinstance(value, dict)
             for b in value.get("build_ids") or []]
    if built and report["build"]["id"] not in built:
        out.append(f"the generated clips come from models trained on build(s) {', '.join(sorted(set(built)))}, but "
                   f"--build is build {report['build']['id'] or '?'}")
    lengths = [len(f) / MATCH_FRAME_RATE for f in gen_match.frames]
    held = [len(f) / MATCH_FRAME_RATE for f in data.frames["heldout"]]
    if lengths and held and not 0.5 <= float(np.median(lengths)) / float(np.median(held)) <= 2.0:
        out.append(f"generated clips (median {np.median(lengths):.1f} s) and the held-out clips that calibrate the "
                   f"thresholds (median {np.median(held):.1f} s) differ in length: the false-positive bound assumes "
                   "comparable clips")
    return out

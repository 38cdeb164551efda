"""Does generated music follow its prompt? Judged by musicnn (Pons & Serra 2019, arXiv 1909.06654), a music tagger
trained on Million Song Dataset / MagnaTagATune tags: no joint text-audio model (no CLAP) is involved, so a run that
was labelled or conditioned with CLAP is not judged by the same model.

(a) **Tag agreement.** A clip's tag vector is its mean musicnn tag probabilities over its 3 s patches ``[50]``. For
    each generated clip, the cosine with its own reference track's vector (paired, by id) against the mean cosine with
    the other references: the expectation of a shuffled-reference baseline over all derangements (what
    :func:`n2m.eval.clap_score.paired_score` samples once). The gain ``paired - shuffled`` > 0 says clips resemble the track
    whose caption they were generated from more than other tracks.
(b) **Probe.** Nearest-centroid classification (Euclidean distance to each class's mean clip vector; the nearest
    shrunken centroid of Tibshirani et al. 2002, PNAS 99(10), without shrinkage) of generated clips into the classes
    of a manifest column (e.g. ``style``), centroids from the tracks not held out. Reported beside chance (the
    expected accuracy of predictions independent of the labels, ``sum_c P(pred = c) P(true = c)``) and beside the
    same accuracy on the real held-out tracks: the ceiling this judge allows.

Intervals are percentile bootstraps over clips (:func:`n2m.eval.clap_score.bootstrap_mean`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2m.errors import JobFailed, UserError
from n2m.eval.audio_sets import EmbeddedSet, Preprocess, embed_files
from n2m.eval.clap_score import bootstrap_mean
from n2m.eval.report import metric
from n2m.manifest import is_holdout, read_rows

TOP_TAGS = 5


def _interval(values: np.ndarray, reps: int, seed: int) -> dict[str, float | None]:
    low, high = bootstrap_mean(values, reps, seed=seed) if reps and len(values) > 1 else (None, None)
    return {"mean": float(np.mean(values)), "low": low, "high": high}


# ---------------------------------------------------------------------------------------------------------------------
# (a) Tag agreement


@dataclass(frozen=True)
class TagAgreement:
    """Per id (sorted): ``paired[i]`` = cos(g_i, r_i), ``shuffled[i]`` = mean over j != i of cos(g_i, r_j)."""

    ids: tuple[str, ...]
    paired: np.ndarray  # [N]
    shuffled: np.ndarray  # [N]
    missing_reference: tuple[str, ...]
    missing_generated: tuple[str, ...]

    def as_dict(self, reps: int = 0, seed: int = 0) -> dict[str, Any]:
        return {"n": len(self.ids), "paired": _interval(self.paired, reps, seed),
                "shuffled": _interval(self.shuffled, reps, seed),
                "gain": _interval(self.paired - self.shuffled, reps, seed),
                "per_item": {i: {"paired": float(p), "shuffled": float(s)}
                             for i, p, s in zip(self.ids, self.paired, self.shuffled)},
                "missing_reference": list(self.missing_reference), "missing_generated": list(self.missing_generated)}


def tag_agreement(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> TagAgreement:
    """Tag vectors ``{id: [T]}`` of generated clips and of their references, paired by id (two ids at least)."""
    ids = sorted(set(generated) & set(reference))
    if len(ids) < 2:
        raise JobFailed(f"tag agreement needs two or more generated clips with a reference of the same id, "
                        f"found {len(ids)}")
    g = np.stack([generated[i] for i in ids]).astype(np.float64)
    r = np.stack([reference[i] for i in ids]).astype(np.float64)
    g /= np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
    r /= np.maximum(np.linalg.norm(r, axis=1, keepdims=True), 1e-12)
    cos = g @ r.T  # [N, N]
    paired = np.diag(cos).copy()
    shuffled = (cos.sum(axis=1) - paired) / (len(ids) - 1)
    return TagAgreement(tuple(ids), paired, shuffled, tuple(sorted(set(generated) - set(reference))),
                        tuple(sorted(set(reference) - set(generated))))


def tag_rows(agreement: TagAgreement, reps: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics rows, tags section)``."""
    section = agreement.as_dict(reps, seed)
    n = section["n"]
    rows = {}
    for name, key, note in (("musicnn_tag_agreement", "paired", "cosine of a clip's tag vector with its own "
                                                                "reference's"),
                            ("musicnn_tag_agreement_shuffled", "shuffled", "the same with the other references"),
                            ("musicnn_tag_gain", "gain", "paired minus shuffled (> 0: clips match their own track)")):
        s = section[key]
        rows[name] = metric(s["mean"], n, s["low"], s["high"], note=note)
    return rows, section


# ---------------------------------------------------------------------------------------------------------------------
# (b) Probe


def fit_centroids(vectors: np.ndarray, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """``(classes sorted, centroids [K, D])``: the mean of ``vectors`` ``[N, D]`` per label."""
    classes = sorted(set(labels))
    tags = np.array(labels)
    return classes, np.stack([vectors[tags == c].mean(axis=0) for c in classes])


def nearest_centroid(classes: list[str], centroids: np.ndarray, queries: np.ndarray) -> list[str]:
    """The class of the Euclidean-nearest centroid for each row of ``queries`` ``[M, D]`` (ties: first class)."""
    distance = ((queries[:, None, :].astype(np.float64) - centroids[None].astype(np.float64)) ** 2).sum(-1)  # [M, K]
    return [classes[k] for k in distance.argmin(axis=1)]


def probe_score(ids: list[str], predicted: list[str], truth: list[str], reps: int = 0,
                seed: int = 0) -> dict[str, Any]:
    """Accuracy with its bootstrap interval, chance (``sum_c P(pred = c) P(true = c)``), confusion and per item."""
    n = len(truth)
    if n == 0:
        raise ValueError("no labelled clip to score")
    correct = np.array([p == t for p, t in zip(predicted, truth)], np.float64)
    acc = _interval(correct, reps, seed)
    pred_freq, true_freq = Counter(predicted), Counter(truth)
    chance = sum(pred_freq[c] * true_freq[c] for c in true_freq) / n**2
    confusion: dict[str, dict[str, int]] = {}
    for p, t in zip(predicted, truth):
        confusion.setdefault(t, {})
        confusion[t][p] = confusion[t].get(p, 0) + 1
    return {"n": n, "accuracy": acc["mean"], "low": acc["low"], "high": acc["high"], "chance": chance,
            "confusion": {t: dict(sorted(row.items())) for t, row in sorted(confusion.items())},
            "per_item": {i: {"label": t, "predicted": p} for i, p, t in zip(ids, predicted, truth)}}


@dataclass(frozen=True)
class ProbeLabels:
    """A manifest's classes: ``labels`` by id (audio file stem) for every row; the files of the rows not held out
    (centroids) and of the held-out rows (the ceiling)."""

    column: str
    labels: dict[str, str]
    centroid_files: tuple[Path, ...]
    held_out_files: tuple[Path, ...]


def read_probe_labels(path: str | Path, column: str) -> ProbeLabels:
    """Rows of a JSON-lines manifest with ``path`` and a scalar ``column`` (relative paths from its folder)."""
    manifest = Path(path)
    labels: dict[str, str] = {}
    centroid, held = [], []
    for number, row in enumerate(read_rows(manifest), 1):
        value, file = row.get(column), row.get("path")
        if not file or value is None or isinstance(value, list | dict) or not str(value).strip():
            raise UserError(f"{manifest}: row {number} needs 'path' and a single value in '{column}'")
        audio = Path(file) if Path(file).is_absolute() else manifest.parent / file
        if audio.stem in labels:
            raise UserError(f"{manifest}: two rows share the file stem {audio.stem!r}: ids must be unique")
        labels[audio.stem] = str(value).strip()
        (held if is_holdout(row) else centroid).append(audio)
    missing = [p for p in centroid + held if not p.is_file()]
    if missing:
        raise UserError(f"{manifest}: {len(missing)} audio file(s) missing, e.g. {missing[0]}")
    if not centroid:
        raise UserError(f"{manifest}: every row is held out; the probe's centroids need tracks that are not")
    return ProbeLabels(column, labels, tuple(centroid), tuple(held))


def probe_rows(musicnn, generated: EmbeddedSet, labels: ProbeLabels, preprocess: Preprocess,
               cache: Path | None, reps: int, seed: int) -> tuple[dict[str, Any], dict[str, Any], list[str], dict]:
    """``(metrics rows, probe section, warnings, set summaries)``: centroids of the non-held-out tracks' mean layer
    features; generated clips (labelled through their id) and the real held-out tracks classified."""

    def embedded(files: tuple[Path, ...], what: str) -> tuple[EmbeddedSet, np.ndarray]:
        found = embed_files(list(files), musicnn, preprocess, cache, desc=f"musicnn: {what}")
        sets[f"{what} (musicnn)"] = found.summary()
        return found, np.stack([musicnn.split(c)[0] for c in found.clips]) if found.ids else np.zeros((0, 0))

    sets: dict[str, Any] = {}
    train, vectors = embedded(labels.centroid_files, "centroid tracks")
    if not train.ids:
        raise JobFailed(f"none of the {len(labels.centroid_files)} centroid tracks could be embedded")
    classes, centroids = fit_centroids(vectors, [labels.labels[i] for i in train.ids])
    section: dict[str, Any] = {"column": labels.column, "centroid_tracks": len(train.ids),
                               "classes": dict(sorted(Counter(labels.labels[i] for i in train.ids).items()))}
    warnings = []
    known = [k for k, i in enumerate(generated.ids) if i in labels.labels]
    unlabelled = [i for i in generated.ids if i not in labels.labels]
    if unlabelled:
        warnings.append(f"probe: {len(unlabelled)} generated clips have no {labels.column!r} in the manifest "
                        f"(ids are file stems), e.g. {unlabelled[0]}")
    train_ids = set(train.ids)
    in_centroids = [generated.ids[k] for k in known if generated.ids[k] in train_ids]
    if in_centroids:
        warnings.append(f"probe: {len(in_centroids)} generated clips share an id with a centroid track (not held out)")
    rows = {}
    if known:
        ids = [generated.ids[k] for k in known]
        queries = np.stack([musicnn.split(generated.clips[k])[0] for k in known])
        g = section["generated"] = probe_score(ids, nearest_centroid(classes, centroids, queries),
                                               [labels.labels[i] for i in ids], reps, seed)
        rows["musicnn_probe_accuracy"] = metric(g["accuracy"], g["n"], g["low"], g["high"],
                                                note=f"nearest {labels.column} centroid of {len(classes)}")
        rows["musicnn_probe_chance"] = metric(g["chance"], g["n"], note="predictions independent of the labels")
    else:
        warnings.append(f"probe: no generated clip has a {labels.column!r} label; accuracy not computed")
    if not labels.held_out_files:
        warnings.append("probe: the manifest marks no track as held out; no real-audio ceiling")
        return rows, section, warnings, sets
    held, queries = embedded(labels.held_out_files, "held-out tracks")
    if held.ids:
        r = section["real_held_out"] = probe_score(held.ids, nearest_centroid(classes, centroids, queries),
                                                   [labels.labels[i] for i in held.ids], reps, seed)
        rows["musicnn_probe_ceiling"] = metric(r["accuracy"], r["n"], r["low"], r["high"],
                                               note=f"real held-out tracks (chance {r['chance']:.3f})")
    return rows, section, warnings, sets


# ---------------------------------------------------------------------------------------------------------------------
# Report glue


def judge(report: dict[str, Any], musicnn, generated: EmbeddedSet, reference: EmbeddedSet | None,
          labels: ProbeLabels | None, preprocess: Preprocess, cache: Path | None, reps: int, seed: int) -> None:
    """Add the ``adherence`` section, its metrics rows, set summaries and warnings to ``report``: tag agreement when
    there is a ``reference`` set, the probe when there are ``labels``. ``musicnn`` is the
    :class:`n2m.eval.embeddings.MusicnnEmbedder` that embedded ``generated`` and ``reference``."""
    section: dict[str, Any] = {"model": musicnn.model_id, "layer": musicnn.layer}
    if reference is not None:
        tags = [{i: musicnn.split(c)[1] for i, c in s.clips_by_id().items()} for s in (generated, reference)]
        try:
            rows, section["tags"] = tag_rows(tag_agreement(*tags), reps, seed)
            report["metrics"].update(rows)
        except JobFailed as err:
            report["warnings"].append(f"musicnn tag agreement skipped: {err}")
    if labels is not None:
        rows, section["probe"], warnings, sets = probe_rows(musicnn, generated, labels, preprocess, cache, reps, seed)
        report["metrics"].update(rows)
        report["warnings"] += warnings
        report["sets"].update(sets)
    report["adherence"] = section


def tag_samples(report: dict[str, Any], musicnn, known: Sequence[EmbeddedSet], preprocess: Preprocess,
                cache: Path | None, top: int = TOP_TAGS) -> None:
    """Each audio-player row (``report["samples"]``) gets ``generated_tags`` / ``reference_tags``: the clip's ``top``
    musicnn tags as ``[[tag, mean probability], ...]``, from the ``known`` sets or else embedded now."""
    samples = report.get("samples") or []
    clips = {path: clip for found in known for path, clip in zip(found.paths, found.clips)}
    paths = {str(s[side]) for s in samples for side in ("generated", "reference") if s.get(side)}
    if paths - set(clips):
        tagged = embed_files(sorted(map(Path, paths - set(clips))), musicnn, preprocess, cache,
                             desc="musicnn: players", progress=False)
        clips.update(zip(tagged.paths, tagged.clips))
    found = {path: musicnn.split(clip)[1] for path, clip in clips.items() if path in paths}
    for s in samples:
        for side in ("generated", "reference"):
            vector = found.get(str(s.get(side)))
            if vector is not None:
                order = np.argsort(-vector, kind="stable")[:top]
                s[f"{side}_tags"] = [[musicnn.tags[k], round(float(vector[k]), 4)] for k in order]

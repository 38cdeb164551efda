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

Several clips of one prompt (takes, :mod:`n2m.eval.takes`) each score on their own and the prompt's figure is their
mean: the prompt stays the unit, so intervals are percentile bootstraps over prompts
(:func:`n2m.eval.clap_score.bootstrap_mean`); with one clip a prompt, over clips.
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
    """Per prompt id (sorted): ``paired[i]`` = cos(g, r_i), ``shuffled[i]`` = mean over j != i of cos(g, r_j), each
    the mean over the prompt's ``clips[i]`` generated clips g."""

    ids: tuple[str, ...]
    paired: np.ndarray  # [N]
    shuffled: np.ndarray  # [N]
    missing_reference: tuple[str, ...]
    missing_generated: tuple[str, ...]
    clips: tuple[int, ...]  # [N] generated clips per prompt

    def as_dict(self, reps: int = 0, seed: int = 0) -> dict[str, Any]:
        return {"n": len(self.ids), "clips": int(sum(self.clips)),
                "paired": _interval(self.paired, reps, seed),
                "shuffled": _interval(self.shuffled, reps, seed),
                "gain": _interval(self.paired - self.shuffled, reps, seed),
                "per_item": {i: {"paired": float(p), "shuffled": float(s)}
                             for i, p, s in zip(self.ids, self.paired, self.shuffled)},
                "missing_reference": list(self.missing_reference), "missing_generated": list(self.missing_generated)}


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _group_means(values: np.ndarray, owner: np.ndarray, groups: int) -> np.ndarray:
    """``[groups]``: the mean of ``values`` ``[M]`` over the rows whose ``owner`` ``[M]`` is each group index."""
    return np.bincount(owner, weights=values, minlength=groups) / np.bincount(owner, minlength=groups)


def tag_agreement(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                  prompt_of: dict[str, str] | None = None) -> TagAgreement:
    """Tag vectors ``{key: [T]}`` of generated clips and ``{id: [T]}`` of their references, paired by prompt id: a
    clip's prompt is ``prompt_of[key]``, else its key (two prompts at least). A prompt's values are the means over its
    clips."""
    owner = {key: (prompt_of or {}).get(key, key) for key in generated}
    ids = sorted(set(owner.values()) & set(reference))
    if len(ids) < 2:
        raise JobFailed(f"tag agreement needs two or more generated clips with a reference of the same id, "
                        f"found {len(ids)}")
    column = {i: n for n, i in enumerate(ids)}
    keys = sorted(k for k in generated if owner[k] in column)
    own = np.array([column[owner[k]] for k in keys])
    cos = _unit(np.stack([generated[k] for k in keys])) @ _unit(np.stack([reference[i] for i in ids])).T  # [M, N]
    paired = cos[np.arange(len(keys)), own]
    shuffled = (cos.sum(axis=1) - paired) / (len(ids) - 1)
    return TagAgreement(tuple(ids), _group_means(paired, own, len(ids)), _group_means(shuffled, own, len(ids)),
                        tuple(sorted(k for k in generated if owner[k] not in reference)),
                        tuple(sorted(set(reference) - set(owner.values()))),
                        tuple(int(c) for c in np.bincount(own, minlength=len(ids))))


def tag_rows(agreement: TagAgreement, reps: int, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(metrics rows, tags section)``."""
    section = agreement.as_dict(reps, seed)
    n = section["n"]
    takes = f"; {section['clips']} clips, each prompt the mean of its own" if section["clips"] > n else ""
    rows = {}
    for name, key, note in (("musicnn_tag_agreement", "paired", "cosine of a clip's tag vector with its own "
                                                                "reference's"),
                            ("musicnn_tag_agreement_shuffled", "shuffled", "the same with the other references"),
                            ("musicnn_tag_gain", "gain", "paired minus shuffled (> 0: clips match their own track)")):
        s = section[key]
        rows[name] = metric(s["mean"], n, s["low"], s["high"], note=note + takes)
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
                seed: int = 0, prompts: list[str] | None = None) -> dict[str, Any]:
    """Accuracy with its bootstrap interval, chance (``sum_c P(pred = c) P(true = c)``, over clips), confusion (clips)
    and per item. With ``prompts`` (each clip's prompt id, for several clips a prompt) the accuracy is the mean over
    prompts of each prompt's fraction right, ``n`` counts prompts and the interval resamples prompts."""
    clips = len(truth)
    if clips == 0:
        raise ValueError("no labelled clip to score")
    correct = np.array([p == t for p, t in zip(predicted, truth)], np.float64)
    if prompts is not None:
        index = {p: n for n, p in enumerate(sorted(set(prompts)))}
        correct = _group_means(correct, np.array([index[p] for p in prompts]), len(index))
    acc = _interval(correct, reps, seed)
    pred_freq, true_freq = Counter(predicted), Counter(truth)
    chance = sum(pred_freq[c] * true_freq[c] for c in true_freq) / clips**2
    confusion: dict[str, dict[str, int]] = {}
    for p, t in zip(predicted, truth):
        confusion.setdefault(t, {})
        confusion[t][p] = confusion[t].get(p, 0) + 1
    per_item = {i: {"label": t, "predicted": p} for i, p, t in zip(ids, predicted, truth)}
    if prompts is not None:
        for i, prompt in zip(ids, prompts):
            per_item[i]["prompt"] = prompt
    return {"n": len(correct), "clips": clips, "accuracy": acc["mean"], "low": acc["low"], "high": acc["high"],
            "chance": chance, "confusion": {t: dict(sorted(row.items())) for t, row in sorted(confusion.items())},
            "per_item": per_item}


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
               cache: Path | None, reps: int, seed: int, prompt_of: dict[str, str] | None = None
               ) -> tuple[dict[str, Any], dict[str, Any], list[str], dict]:
    """``(metrics rows, probe section, warnings, set summaries)``: centroids of the non-held-out tracks' mean layer
    features; generated clips (labelled through their prompt id: ``prompt_of[id]``, else the id) and the real held-out
    tracks classified."""

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
    owner = [(prompt_of or {}).get(i, i) for i in generated.ids]
    known = [k for k, i in enumerate(owner) if i in labels.labels]
    unlabelled = [i for i in owner if i not in labels.labels]
    if unlabelled:
        warnings.append(f"probe: {len(unlabelled)} generated clips have no {labels.column!r} in the manifest "
                        f"(ids are file stems), e.g. {unlabelled[0]}")
    train_ids = set(train.ids)
    in_centroids = [owner[k] for k in known if owner[k] in train_ids]
    if in_centroids:
        warnings.append(f"probe: {len(in_centroids)} generated clips share an id with a centroid track (not held out)")
    rows = {}
    if known:
        ids, prompts = [generated.ids[k] for k in known], [owner[k] for k in known]
        queries = np.stack([musicnn.split(generated.clips[k])[0] for k in known])
        g = section["generated"] = probe_score(ids, nearest_centroid(classes, centroids, queries),
                                               [labels.labels[i] for i in prompts], reps, seed,
                                               prompts if prompt_of else None)
        takes = f"; {g['clips']} clips, each prompt the mean of its own" if g["clips"] > g["n"] else ""
        rows["musicnn_probe_accuracy"] = metric(g["accuracy"], g["n"], g["low"], g["high"],
                                                note=f"nearest {labels.column} centroid of {len(classes)}{takes}")
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
          labels: ProbeLabels | None, preprocess: Preprocess, cache: Path | None, reps: int, seed: int,
          prompt_of: dict[str, str] | None = None) -> None:
    """Add the ``adherence`` section, its metrics rows, set summaries and warnings to ``report``: tag agreement when
    there is a ``reference`` set, the probe when there are ``labels``. ``musicnn`` is the
    :class:`n2m.eval.embeddings.MusicnnEmbedder` that embedded ``generated`` and ``reference``; ``prompt_of`` names
    the prompt of generated clips whose id is not their prompt's (takes, :mod:`n2m.eval.takes`)."""
    section: dict[str, Any] = {"model": musicnn.model_id, "layer": musicnn.layer}
    if reference is not None:
        tags = [{i: musicnn.split(c)[1] for i, c in s.clips_by_id().items()} for s in (generated, reference)]
        try:
            rows, section["tags"] = tag_rows(tag_agreement(*tags, prompt_of=prompt_of), reps, seed)
            report["metrics"].update(rows)
        except JobFailed as err:
            report["warnings"].append(f"musicnn tag agreement skipped: {err}")
    if labels is not None:
        rows, section["probe"], warnings, sets = probe_rows(musicnn, generated, labels, preprocess, cache, reps, seed,
                                                            prompt_of)
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

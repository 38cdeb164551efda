"""The evaluation recipes shared by every ``n2m eval`` command: FAD (with FAD-inf, per-song, bootstrap) between two
embedded sets, the CLAP score of audio against its prompts and references, and the spectral flatness of both sets
(audio or noise?). Each returns report sections."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from n2m.errors import JobFailed, UserError
from n2m.eval import frechet
from n2m.eval.audio_sets import EmbeddedSet, Preprocess, embed_files
from n2m.eval.clap_score import bootstrap_mean, paired_score
from n2m.eval.flatness import NOISE, FlatnessMeter, median_interval, nearer_noise
from n2m.eval.report import metric


@dataclass(frozen=True)
class FadOptions:
    inf: bool = False
    inf_sizes: int = 15
    per_song: bool = False
    bootstrap: int = 200
    seed: int = 0


def _usable(name: str, embedded: EmbeddedSet) -> None:
    frames = sum(len(f) for f in embedded.frames)
    if frames < 2:
        raise JobFailed(f"the {name} set has {frames} usable embeddings ({len(embedded.failures)} files excluded); "
                        "FAD needs at least 2")


def fad(label: str, model: dict[str, Any], reference: EmbeddedSet, generated: EmbeddedSet,
        options: FadOptions) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(metrics rows, fad section, warnings)`` for one embedding model. ``label`` names the metric (``FAD_vggish``)."""
    _usable("reference", reference)
    _usable("generated", generated)
    started = time.perf_counter()
    ref_frames, gen_frames = reference.all_frames(), generated.all_frames()
    ref_stats, gen_stats = frechet.stats_of(ref_frames), frechet.stats_of(gen_frames)
    result = frechet.frechet_distance(ref_stats, gen_stats)
    warnings = [f"{label}: {n}" for n in result.notes]
    dim = ref_stats.dim
    for name, st in (("reference", ref_stats), ("generated", gen_stats)):
        if st.n <= dim:
            warnings.append(f"{label}: the {name} set has {st.n} embeddings for {dim} dimensions; its covariance is "
                            "singular and FAD is dominated by sample size")
    section: dict[str, Any] = {
        "model": model, "result": result.as_dict(), "dim": dim,
        "reference": {"files": len(reference.ids), "frames": ref_stats.n},
        "generated": {"files": len(generated.ids), "frames": gen_stats.n},
    }
    rows = {}
    low = high = None
    if options.bootstrap and len(reference.ids) > 1 and len(generated.ids) > 1:
        try:
            ci = frechet.bootstrap(reference.frames, generated.frames, options.bootstrap, seed=options.seed)
            section["bootstrap"] = ci.as_dict()
            low, high = ci.low, ci.high
        except ValueError as err:
            warnings.append(f"{label}: bootstrap skipped: {err}")
    note = f"{len(reference.ids)} ref / {len(generated.ids)} gen files; {ref_stats.n}/{gen_stats.n} embeddings"
    rows[label] = metric(result.value, len(generated.ids), low, high, note=note if result.valid else "INVALID: " + note)
    if options.inf:
        try:
            sizes = frechet.default_sizes(gen_stats.n, options.inf_sizes)
            fit = frechet.fad_inf(ref_stats, gen_frames, sizes, seed=options.seed)
            section["fad_inf"] = fit.as_dict()
            note = f"fit over {len(fit.points)} subset sizes, r2 {fit.r2:.3f}"
            if fit.value < 0:  # an extrapolation below 0 means "indistinguishable at this n", not a distance
                note += f"; the fit extrapolates to {fit.value:.4g} < 0, reported as 0"
            rows[f"{label}_inf"] = metric(max(fit.value, 0.0), gen_stats.n, note=note)
        except ValueError as err:
            warnings.append(f"{label}: FAD-inf skipped: {err}")
    if options.per_song:
        songs = frechet.per_song(ref_stats, generated.frames)
        section["per_song"] = [{"id": i, "fad": r.value, "frames": len(f)}
                               for i, r, f in zip(generated.ids, songs, generated.frames)]
        values = [r.value for r in songs if r.valid]
        if values:
            rows[f"{label}_per_song_median"] = metric(float(np.median(values)), len(values),
                                                      float(np.percentile(values, 25)),
                                                      float(np.percentile(values, 75)), note="median [IQR] per song")
    section["seconds"] = time.perf_counter() - started
    return rows, section, warnings


# ---------------------------------------------------------------------------------------------------------------------
# CLAP score


def read_prompts(path: str | Path) -> dict[str, str]:
    """``{id: text}`` from JSON lines with ``id`` and ``text`` (``caption`` also accepted); bad lines are errors."""
    prompts: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as err:
        raise UserError(f"cannot read prompts {path}: {err.strerror}") from err
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pid, text = str(row["id"]), row.get("text", row.get("caption"))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UserError(f"{path}:{number}: expected a JSON object with 'id' and 'text'") from err
        if not isinstance(text, str) or not text.strip():
            raise UserError(f"{path}:{number}: prompt {pid!r} has no text")
        if pid in prompts:
            raise UserError(f"{path}:{number}: duplicate prompt id {pid!r}")
        prompts[pid] = text
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts


def clap_scores(embedder, prompts: dict[str, str], generated: EmbeddedSet, reference: EmbeddedSet | None,
                seed: int = 0, bootstrap: int = 200) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(metrics rows, clap_score section, warnings)``: generated audio vs its own prompt (with the shuffled
    baseline), and, with references, generated vs reference audio and references vs their prompts. The CLAP score's
    95% interval resamples the clips ``bootstrap`` times (0: none)."""
    ids = sorted(prompts)
    text = dict(zip(ids, embedder.embed_text([prompts[i] for i in ids])))
    audio = generated.clips_by_id()
    if not set(audio) & set(text):
        raise JobFailed("no generated audio id matches a prompt id (audio file stems must equal prompt ids)")
    scores = {"text": paired_score(audio, text, seed=seed)}
    if reference is not None and reference.ids:
        ref_audio = reference.clips_by_id()
        if set(audio) & set(ref_audio):
            scores["gt_audio"] = paired_score(audio, ref_audio, shuffled=False)
        if set(ref_audio) & set(text):
            scores["reference_text"] = paired_score(ref_audio, text, seed=seed)
    rows = {}
    t = scores["text"]
    low, high = bootstrap_mean(np.array(t.values), bootstrap, seed=seed) if bootstrap and t.n > 1 else (None, None)
    rows["CLAP_score"] = metric(t.mean, t.n, low, high, note=f"std {t.std:.4f}; audio vs its own prompt")
    if t.shuffled_mean is not None:
        rows["CLAP_score_shuffled"] = metric(t.shuffled_mean, t.n, note=f"prompts deranged (seed {seed})")
    if "gt_audio" in scores:
        rows["CLAP_gt_audio"] = metric(scores["gt_audio"].mean, scores["gt_audio"].n,
                                       note="generated vs reference audio")
    if "reference_text" in scores:
        r = scores["reference_text"]
        rows["CLAP_score_reference"] = metric(r.mean, r.n, note="reference audio vs prompt (ground truth)")
    warnings = []
    if t.missing_target:
        warnings.append(f"{len(t.missing_target)} generated files have no prompt: {', '.join(t.missing_target[:10])}")
    if t.missing_audio:
        warnings.append(f"{len(t.missing_audio)} prompts have no generated audio: {', '.join(t.missing_audio[:10])}")
    return rows, {k: v.as_dict() for k, v in scores.items()}, warnings


# ---------------------------------------------------------------------------------------------------------------------
# Spectral flatness


def _flatness_values(found: EmbeddedSet) -> tuple[dict[str, float], list[str]]:
    """``({id: clip flatness}, ids of silent clips)`` from a set measured by :class:`n2m.eval.flatness.FlatnessMeter`."""
    values = {i: float(c[0]) for i, c in zip(found.ids, found.clips) if np.isfinite(c[0])}
    return values, [i for i, c in zip(found.ids, found.clips) if not np.isfinite(c[0])]


def flatness(reference: EmbeddedSet, generated: EmbeddedSet) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(metrics rows, flatness section, warnings)`` from both sets' clip flatness (:mod:`n2m.eval.flatness`):
    ``spectral_flatness`` (median over the generated clips, with the exact interval of a median),
    ``spectral_flatness_reference`` (the same over the references) and ``spectral_flatness_reference_max`` (the
    flattest real track: generated clips above it are noisier than any reference). ``noise_like`` in the section:
    the median sits nearer white noise than the flattest reference (:func:`n2m.eval.flatness.nearer_noise`)."""
    rows: dict[str, Any] = {}
    section: dict[str, Any] = {"meter": FlatnessMeter.model_id, "settings": FlatnessMeter.settings,
                               "white_noise": NOISE}
    warnings = []
    for side, found, name in (("generated", generated, "spectral_flatness"),
                              ("reference", reference, "spectral_flatness_reference")):
        values, silent = _flatness_values(found)
        part = section[side] = {"per_item": values, "silent": silent}
        if silent:
            warnings.append(f"spectral flatness: {len(silent)} {side} clips have no frame above -60 dBFS (silent), "
                            f"e.g. {silent[0]}")
        if not values:
            rows[name] = metric(None, 0, note=f"no {side} clip with sound")
            continue
        v = np.array(list(values.values()))
        part["median"], part["max"] = float(np.median(v)), float(v.max())
        low, high = median_interval(v)
        rows[name] = metric(part["median"], v.size, low, high,
                            note=f"median over clips (white noise {NOISE:.2f}, a pure tone 0); max {part['max']:.4f}")
    ref, gen = section["reference"], section["generated"]
    both = "median" in gen and "max" in ref
    section["noise_like"] = nearer_noise(gen["median"], ref["max"]) if both else None
    if "max" in ref:
        flattest = max(ref["per_item"], key=ref["per_item"].get)
        rows["spectral_flatness_reference_max"] = metric(ref["max"], len(ref["per_item"]),
                                                         note=f"the flattest real track ({flattest})")
    if both and gen["median"] > ref["max"]:
        figures = f"median {gen['median']:.3f} > {ref['max']:.3f}, the flattest reference's (white noise {NOISE:.2f})"
        warnings.append(f"spectral flatness: the generated clips sound like noise, not audio: {figures}"
                        if section["noise_like"] else
                        f"spectral flatness: the generated clips are noisier than every reference, though nearer "
                        f"music than white noise: {figures}")
    return rows, section, warnings


def add_flatness(report: dict[str, Any], reference: list[Path], generated: list[Path], preprocess: Preprocess,
                 cache: Path | None) -> None:
    """Measure both file lists (the report's own preprocessing, then 16 kHz; per-clip values cached by content like
    embeddings) and add the ``flatness`` section, its metrics rows, set summaries and warnings to ``report``; each
    audio-player row in ``report["samples"]`` gets ``generated_flatness`` / ``reference_flatness``."""
    meter = FlatnessMeter()
    ref = embed_files(reference, meter, preprocess, cache, desc="flatness: reference")
    gen = embed_files(generated, meter, preprocess, cache, desc="flatness: generated")
    report["sets"]["reference (flatness)"] = ref.summary()
    report["sets"]["generated (flatness)"] = gen.summary()
    rows, report["flatness"], warnings = flatness(ref, gen)
    report["metrics"].update(rows)
    report["warnings"] += warnings
    by_path = {path: float(c[0]) for found in (ref, gen) for path, c in zip(found.paths, found.clips)
               if np.isfinite(c[0])}
    for sample in report.get("samples") or []:
        for side in ("generated", "reference"):
            if sample.get(side) and str(sample[side]) in by_path:
                sample[f"{side}_flatness"] = round(by_path[str(sample[side])], 4)

"""The ``n2m eval fad``, ``clap-score`` and ``adherence`` jobs as functions of their typed settings (the command line
is :mod:`n2m.eval.cli`): each prints its figures as a table and writes ``report.json`` + ``report.html`` under ``out``.

From Python::

    from n2m.eval.jobs import FadSettings, run_fad
    run_fad(FadSettings(reference=["real/"], generated=["generated/"], embedding=["musicnn"], out="reports/fad"))
"""

from __future__ import annotations

from dataclasses import dataclass

from n2m.config import resolved
from n2m.errors import UserError
from n2m.eval import report as reports
from n2m.eval.audio_sets import Preprocess, by_id, embed_files, list_audio
from n2m.eval.options import (
    EmbeddingSettings,
    FadExtras,
    OutputSettings,
    ProbeSettings,
    cache_root,
    embed_both,
    embedding_options,
    fad_label,
    fad_options,
    finish,
    model_info,
    out_dir,
    pair_items,
    probe_labels,
)
from n2m.progress import honours_quiet


@dataclass(frozen=True, kw_only=True)
class FadSettings(FadExtras, EmbeddingSettings, OutputSettings):
    """``n2m eval fad``: FAD of the ``generated`` against the ``reference`` audio (directories, globs or ``.txt``
    lists) under each ``embedding`` (``NAME[:ARGS]``: vggish, clap or musicnn)."""

    reference: list[str]
    generated: list[str]
    embedding: list[str]


@dataclass(frozen=True, kw_only=True)
class ClapScoreSettings(EmbeddingSettings, OutputSettings):
    """``n2m eval clap-score``: the CLAP score of each ``audio`` clip with its own prompt (``prompts``: JSON lines with
    ``id`` and ``text``) under the CLAP model ``joint_model``; ``reference`` clips give the ground-truth scores."""

    audio: list[str]
    prompts: str
    joint_model: str
    reference: list[str] | None = None
    bootstrap: int = 1000


@dataclass(frozen=True, kw_only=True)
class AdherenceSettings(ProbeSettings, EmbeddingSettings, OutputSettings):
    """``n2m eval adherence``: musicnn tag agreement of the ``generated`` clips with their ``reference`` tracks and
    the probe over ``probe_labels`` (at least one of the two), ``prompts`` shown beside the players."""

    generated: list[str]
    reference: list[str] | None = None
    embedding: str = "musicnn"
    prompts: str | None = None
    bootstrap: int = 1000


@honours_quiet
def run_fad(settings: FadSettings) -> int:
    """FAD under each embedding (with FAD-inf, per-song FAD, a bootstrap interval as asked), spectral flatness of
    both sets, the musicnn tags of the players' clips; the report."""
    from n2m.eval import adherence, embeddings, scoring

    reference, generated = list_audio(settings.reference), list_audio(settings.generated)
    if not reference or not generated:
        raise UserError(f"no audio files found ({len(reference)} reference, {len(generated)} generated)")
    out = out_dir(settings, "fad")
    report = reports.base_report("fad", out.name, resolved(settings))
    preprocess = Preprocess(settings.crop_seconds, settings.band_rate)
    report.update(preprocess=preprocess.as_dict(), fad={}, sets={}, models={}, warnings=[],
                  lineage=reports.lineage(generated))
    musicnn = None
    for spec in settings.embedding:
        embedder = embeddings.load(spec, embedding_options(settings))
        ref, gen = embed_both(embedder, reference, generated, preprocess, cache_root(settings))
        label = fad_label(embedder.name)
        report["models"][embedder.name] = model_info(embedder)
        report["sets"][f"reference ({embedder.name})"] = ref.summary()
        report["sets"][f"generated ({embedder.name})"] = gen.summary()
        rows, section, warnings = scoring.fad(label, model_info(embedder), ref, gen, fad_options(settings, settings.seed))
        report["metrics"].update(rows)
        report["fad"][embedder.name] = section
        report["warnings"] += warnings
        if embedder.name == "musicnn":
            musicnn = (embedder, ref, gen)
    reports.attach_samples(report, pair_items(generated, reference), settings.samples, settings.seed)
    if musicnn is not None:
        adherence.tag_samples(report, musicnn[0], musicnn[1:], preprocess, cache_root(settings))
    scoring.add_flatness(report, reference, generated, preprocess, cache_root(settings))
    return finish(report, out)


@honours_quiet
def run_clap_score(settings: ClapScoreSettings) -> int:
    """The CLAP score of every clip with its prompt, against shuffled prompts (and the references'); the report."""
    from n2m.eval import embeddings, scoring

    prompts = scoring.read_prompts(settings.prompts)
    generated = list_audio(settings.audio)
    by_id(generated)
    reference = list_audio(settings.reference) if settings.reference else []
    by_id(reference)
    out = out_dir(settings, "clap-score")
    report = reports.base_report("clap-score", out.name, resolved(settings))
    preprocess = Preprocess(settings.crop_seconds, settings.band_rate)
    embedder = embeddings.load(f"clap:{settings.joint_model}", embedding_options(settings))
    gen = embed_files(generated, embedder, preprocess, cache_root(settings), desc="clap: audio")
    ref = embed_files(reference, embedder, preprocess, cache_root(settings), desc="clap: reference") if reference else None
    rows, section, warnings = scoring.clap_scores(embedder, prompts, gen, ref, settings.seed, settings.bootstrap)
    report.update(preprocess=preprocess.as_dict(), models={"clap": model_info(embedder)}, clap_score=section,
                  warnings=warnings, lineage=reports.lineage(generated),
                  sets={"audio": gen.summary(), **({"reference": ref.summary()} if ref else {})},
                  missing={"prompts without audio": section["text"]["missing_audio"],
                           "audio files without a prompt": section["text"]["missing_target"]})
    report["metrics"].update(rows)
    reports.attach_samples(report, pair_items(generated, reference, prompts), settings.samples, settings.seed)
    return finish(report, out)


@honours_quiet
def run_adherence(settings: AdherenceSettings) -> int:
    """Tag agreement and the probe, judged by musicnn (never a CLAP); the report."""
    from n2m.eval import adherence, embeddings, scoring

    generated = list_audio(settings.generated)
    by_id(generated)
    reference = list_audio(settings.reference) if settings.reference else []
    by_id(reference)
    if not generated:
        raise UserError("no generated audio files found")
    if not reference and not settings.probe_labels:
        raise UserError("give --reference (tag agreement) and/or --probe-labels (the probe)")
    labels = probe_labels(settings)
    prompts = scoring.read_prompts(settings.prompts) if settings.prompts else None
    features = embeddings.load(settings.embedding, embedding_options(settings))
    if features.name != "musicnn":
        raise UserError(f"the adherence judge is musicnn: --embedding musicnn[:MODEL[:LAYER]], got {settings.embedding!r}")
    out = out_dir(settings, "adherence")
    report = reports.base_report("adherence", out.name, resolved(settings))
    preprocess, cache = Preprocess(settings.crop_seconds, settings.band_rate), cache_root(settings)
    report.update(preprocess=preprocess.as_dict(), models={"musicnn": model_info(features)}, sets={}, warnings=[],
                  lineage=reports.lineage(generated))
    gen = embed_files(generated, features, preprocess, cache, desc="musicnn: generated")
    ref = embed_files(reference, features, preprocess, cache, desc="musicnn: reference") if reference else None
    report["sets"]["generated (musicnn)"] = gen.summary()
    if ref is not None:
        report["sets"]["reference (musicnn)"] = ref.summary()
    adherence.judge(report, features, gen, ref, labels, preprocess, cache, settings.bootstrap, settings.seed)
    reports.attach_samples(report, pair_items(generated, reference, prompts), settings.samples, settings.seed)
    adherence.tag_samples(report, features, [s for s in (gen, ref) if s], preprocess, cache)
    return finish(report, out)

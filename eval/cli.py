"""``n2m eval fad | clap-score | adherence | melody | musiccaps | prompts | compare | memorization``: each prints its figures as a table and
writes ``report.json`` + ``report.html`` under ``--out``."""

from __future__ import annotations

import argparse

from eval import report as reports
from eval.audio_sets import Preprocess, by_id, embed_files, list_audio
from eval.options import (
    BOOTSTRAP,
    EMBEDDING_HELP,
    FAD_LABELS,
    MAX_BOOTSTRAP,
    add_embedding_options,
    add_fad_options,
    add_output_options,
    add_probe_options,
    cache_root,
    embed_both,
    embedding_options,
    fad_options,
    finish,
    model_info,
    out_dir,
    pair_items,
    probe_labels,
)
from n2m.cli import old_spellings
from n2m.config import leaf, resolved
from n2m.errors import UserError

# ---------------------------------------------------------------------------------------------------------------------
# fad


def run_fad(args: argparse.Namespace) -> int:
    from eval import adherence, embeddings, scoring

    reference, generated = list_audio(args.reference), list_audio(args.generated)
    if not reference or not generated:
        raise UserError(f"no audio files found ({len(reference)} reference, {len(generated)} generated)")
    out = out_dir(args, "fad")
    report = reports.base_report("fad", out.name, resolved(args))
    preprocess = Preprocess(args.crop_seconds, args.band_rate)
    report.update(preprocess=preprocess.as_dict(), fad={}, sets={}, models={}, warnings=[],
                  lineage=reports.lineage(generated))
    musicnn = None
    for spec in args.embedding:
        embedder = embeddings.load(spec, embedding_options(args))
        ref, gen = embed_both(embedder, reference, generated, preprocess, cache_root(args))
        label = FAD_LABELS.get(embedder.name, f"FAD_{embedder.name}")
        report["models"][embedder.name] = model_info(embedder)
        report["sets"][f"reference ({embedder.name})"] = ref.summary()
        report["sets"][f"generated ({embedder.name})"] = gen.summary()
        rows, section, warnings = scoring.fad(label, model_info(embedder), ref, gen, fad_options(args))
        report["metrics"].update(rows)
        report["fad"][embedder.name] = section
        report["warnings"] += warnings
        if embedder.name == "musicnn":
            musicnn = (embedder, ref, gen)
    reports.attach_samples(report, pair_items(generated, reference), args.samples, args.seed)
    if musicnn is not None:
        adherence.tag_samples(report, musicnn[0], musicnn[1:], preprocess, cache_root(args))
    scoring.add_flatness(report, reference, generated, preprocess, cache_root(args))
    return finish(report, out)


def add_fad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, nargs="+", help="reference audio: directories, globs or .txt lists")
    p.add_argument("--generated", required=True, nargs="+", help="generated audio: directories, globs or .txt lists")
    p.add_argument("--embedding", required=True, action="append", metavar="NAME[:ARGS]",
                   help="embedding model, repeatable: " + EMBEDDING_HELP)
    add_fad_options(p)
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, run_fad)


# ---------------------------------------------------------------------------------------------------------------------
# clap-score


def run_clap_score(args: argparse.Namespace) -> int:
    from eval import embeddings, scoring

    prompts = scoring.read_prompts(args.prompts)
    generated = list_audio(args.audio)
    by_id(generated)
    reference = list_audio(args.reference) if args.reference else []
    by_id(reference)
    out = out_dir(args, "clap-score")
    report = reports.base_report("clap-score", out.name, resolved(args))
    preprocess = Preprocess(args.crop_seconds, args.band_rate)
    embedder = embeddings.load(f"clap:{args.joint_model}", embedding_options(args))
    gen = embed_files(generated, embedder, preprocess, cache_root(args), desc="clap: audio")
    ref = embed_files(reference, embedder, preprocess, cache_root(args), desc="clap: reference") if reference else None
    rows, section, warnings = scoring.clap_scores(embedder, prompts, gen, ref, args.seed, args.bootstrap)
    report.update(preprocess=preprocess.as_dict(), models={"clap": model_info(embedder)}, clap_score=section,
                  warnings=warnings, lineage=reports.lineage(generated),
                  sets={"audio": gen.summary(), **({"reference": ref.summary()} if ref else {})},
                  missing={"prompts without audio": section["text"]["missing_audio"],
                           "audio files without a prompt": section["text"]["missing_target"]})
    report["metrics"].update(rows)
    reports.attach_samples(report, pair_items(generated, reference, prompts), args.samples, args.seed)
    return finish(report, out)


def add_clap_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--audio", required=True, nargs="+", help="generated audio (file stem = prompt id)")
    p.add_argument("--prompts", required=True, help="JSON lines with 'id' and 'text'")
    old_spellings(p, p.add_argument("--joint-model", required=True, metavar="DIR",
                                    help="CLAP model directory (transformers layout)"), "--model")
    p.add_argument("--reference", nargs="+", help="reference audio with the same ids, for the ground-truth scores")
    p.add_argument("--bootstrap", type=BOOTSTRAP, default=1000, metavar="N",
                   help=f"resamples of the clips for the CLAP score's 95%% interval, at most {MAX_BOOTSTRAP}; "
                        "0 disables")
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, run_clap_score)


# ---------------------------------------------------------------------------------------------------------------------
# adherence


def run_adherence(args: argparse.Namespace) -> int:
    from eval import adherence, embeddings, scoring

    generated = list_audio(args.generated)
    by_id(generated)
    reference = list_audio(args.reference) if args.reference else []
    by_id(reference)
    if not generated:
        raise UserError("no generated audio files found")
    if not reference and not args.probe_labels:
        raise UserError("give --reference (tag agreement) and/or --probe-labels (the probe)")
    labels = probe_labels(args)
    prompts = scoring.read_prompts(args.prompts) if args.prompts else None
    features = embeddings.load(args.embedding, embedding_options(args))
    if features.name != "musicnn":
        raise UserError(f"the adherence judge is musicnn: --embedding musicnn[:MODEL[:LAYER]], got {args.embedding!r}")
    out = out_dir(args, "adherence")
    report = reports.base_report("adherence", out.name, resolved(args))
    preprocess, cache = Preprocess(args.crop_seconds, args.band_rate), cache_root(args)
    report.update(preprocess=preprocess.as_dict(), models={"musicnn": model_info(features)}, sets={}, warnings=[],
                  lineage=reports.lineage(generated))
    gen = embed_files(generated, features, preprocess, cache, desc="musicnn: generated")
    ref = embed_files(reference, features, preprocess, cache, desc="musicnn: reference") if reference else None
    report["sets"]["generated (musicnn)"] = gen.summary()
    if ref is not None:
        report["sets"]["reference (musicnn)"] = ref.summary()
    adherence.judge(report, features, gen, ref, labels, preprocess, cache, args.bootstrap, args.seed)
    reports.attach_samples(report, pair_items(generated, reference, prompts), args.samples, args.seed)
    adherence.tag_samples(report, features, [s for s in (gen, ref) if s], preprocess, cache)
    return finish(report, out)


def add_adherence(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generated", required=True, nargs="+", help="generated audio (file stem = track / prompt id)")
    p.add_argument("--reference", nargs="+", help="the reference tracks, named by the same ids (tag agreement)")
    p.add_argument("--embedding", default="musicnn", metavar="musicnn[:MODEL[:LAYER]]",
                   help="the probe's features (default MSD_musicnn:penultimate); tag vectors are the same model's "
                        "tag probabilities")
    p.add_argument("--prompts", help="JSON lines with 'id' and 'text', shown beside the audio players")
    p.add_argument("--bootstrap", type=BOOTSTRAP, default=1000, metavar="N",
                   help=f"resamples of the clips for the 95%% intervals, at most {MAX_BOOTSTRAP}; 0 disables")
    add_probe_options(p)
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, run_adherence)


# ---------------------------------------------------------------------------------------------------------------------
# Registration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eval import compare, melody_agreement, memorization, musiccaps, prompts

    sub = parser.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    add_fad(sub.add_parser("fad", help="Fréchet Audio Distance between two sets of audio (VGGish and/or CLAP)",
                           description="FAD between reference and generated audio, with optional FAD-inf, per-song "
                                       "FAD and a bootstrap interval."))
    add_clap_score(sub.add_parser("clap-score", help="CLAP score: cosine of each clip with its own prompt",
                                  description="Mean cosine similarity between each audio clip and its own prompt "
                                              "(paired by id), with a shuffled-prompt baseline."))
    add_adherence(sub.add_parser(
        "adherence", help="music adherence judged by musicnn (no CLAP): tag agreement and a class probe",
        description="Tag agreement (each generated clip's musicnn tags vs its own reference track's, paired vs "
                    "shuffled) and a probe (nearest-centroid classification of generated clips into the classes of "
                    "a manifest column, vs chance and vs the real held-out tracks)."))
    melody_agreement.add_arguments(sub.add_parser(
        "melody", help="do clips of n2m sample --melody follow their melody source? pitch-class agreement, paired "
                       "vs shuffled (chance 1/12)",
        description="Pairs each generated clip with the melody source its sidecar names (verified by SHA-256; moved "
                    "sources found under --sources) and measures their melody agreement: the share of frames, among "
                    "those where both are voiced, whose dominant pitch class (n2m.melody's argmax chroma, octave-free) "
                    "is the same. Paired (each clip vs its own source) against shuffled (vs the other clips' "
                    "sources), and the gain paired - shuffled with a bootstrap interval over clips. Chance is 1/12 "
                    "for independent melodies uniform over the 12 pitch classes; the shuffled figure is the chance "
                    "level of the actual sources."))
    musiccaps.add_arguments(sub.add_parser(
        "musiccaps", help="the MusicCaps protocol of Noise2Music (FAD_VGG, FAD_CLAP, FAD_musicnn, CLAP score, "
                          "musicnn adherence)",
        description="Noise2Music Section 5: prompts from a caption CSV, references named by id, generated audio "
                    "scored on its middle 10 s at 16 kHz."))
    prompts.add_arguments(sub.add_parser(
        "prompts", help="prompts + reference audio list from a track manifest (e.g. held-out tracks)",
        description="An evaluation set from a track manifest: prompts (JSON lines id, text) for n2m sample and "
                    "clap-score, and the matching reference audio list for fad and clap-score, paired by file stem."))
    compare.add_arguments(sub.add_parser("compare", help="put report.json files side by side",
                                         description="Compare the headline metrics of several eval reports."))
    memorization.add_arguments(sub.add_parser(
        "memorization", help="does a model reproduce its training clips? nearest training clips by embedding and by "
                             "an alignment-robust audio match, thresholds calibrated on held-out clips",
        description="For every generated clip, its nearest training clips of --build by embedding and by a chroma "
                    "match over all time offsets; the share of clips above thresholds calibrated on the build's "
                    "held-out clips (split conformal, false-positive rate alpha); matches playable side by side; with "
                    "audio prompts, closeness to the prompt vs the training clips."))

"""``n2m eval fad | clap-score | musiccaps | compare``: each prints its figures as a table and writes
``report.json`` + ``report.html`` under ``--out``."""

from __future__ import annotations

import argparse

from eval import report as reports
from eval.audio_sets import Preprocess, by_id, embed_files, list_audio
from eval.options import (
    FAD_LABELS,
    add_embedding_options,
    add_fad_options,
    add_output_options,
    cache_root,
    embed_both,
    embedding_options,
    fad_options,
    finish,
    model_info,
    out_dir,
    pair_items,
)
from n2m.config import leaf, resolved
from n2m.errors import UserError

# ---------------------------------------------------------------------------------------------------------------------
# fad


def run_fad(args: argparse.Namespace) -> int:
    from eval import embeddings, scoring

    reference, generated = list_audio(args.reference), list_audio(args.generated)
    if not reference or not generated:
        raise UserError(f"no audio files found ({len(reference)} reference, {len(generated)} generated)")
    out = out_dir(args, "fad")
    report = reports.base_report("fad", out.name, resolved(args))
    preprocess = Preprocess(args.crop_seconds, args.band_rate)
    report.update(preprocess=preprocess.as_dict(), fad={}, sets={}, models={}, warnings=[],
                  lineage=reports.lineage(generated))
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
    reports.attach_samples(report, pair_items(generated, reference), args.samples, args.seed)
    return finish(report, out)


def add_fad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, nargs="+", help="reference audio: directories, globs or .txt lists")
    p.add_argument("--generated", required=True, nargs="+", help="generated audio: directories, globs or .txt lists")
    p.add_argument("--embedding", required=True, action="append", metavar="NAME:PATH",
                   help="embedding model, repeatable: vggish:WEIGHTS.pth (torchvggish state dict) or clap:DIR "
                        "(a CLAP model directory)")
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
    embedder = embeddings.load(f"clap:{args.model}", embedding_options(args))
    gen = embed_files(generated, embedder, preprocess, cache_root(args), desc="clap: audio")
    ref = embed_files(reference, embedder, preprocess, cache_root(args), desc="clap: reference") if reference else None
    rows, section, warnings = scoring.clap_scores(embedder, prompts, gen, ref, args.seed)
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
    p.add_argument("--model", required=True, help="CLAP model directory (transformers layout)")
    p.add_argument("--reference", nargs="+", help="reference audio with the same ids, for the ground-truth scores")
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, run_clap_score)


# ---------------------------------------------------------------------------------------------------------------------
# Registration


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from eval import compare, musiccaps, prompts

    sub = parser.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    add_fad(sub.add_parser("fad", help="Fréchet Audio Distance between two sets of audio (VGGish and/or CLAP)",
                           description="FAD between reference and generated audio, with optional FAD-inf, per-song "
                                       "FAD and a bootstrap interval."))
    add_clap_score(sub.add_parser("clap-score", help="CLAP score: cosine of each clip with its own prompt",
                                  description="Mean cosine similarity between each audio clip and its own prompt "
                                              "(paired by id), with a shuffled-prompt baseline."))
    musiccaps.add_arguments(sub.add_parser(
        "musiccaps", help="the MusicCaps protocol of Noise2Music (FAD_VGG, FAD_CLAP, CLAP score)",
        description="Noise2Music Section 5: prompts from a caption CSV, references named by id, generated audio "
                    "scored on its middle 10 s at 16 kHz."))
    prompts.add_arguments(sub.add_parser(
        "prompts", help="prompts + reference audio list from a track manifest (e.g. held-out tracks)",
        description="An evaluation set from a track manifest: prompts (JSON lines id, text) for n2m sample and "
                    "clap-score, and the matching reference audio list for fad and clap-score, paired by file stem."))
    compare.add_arguments(sub.add_parser("compare", help="put report.json files side by side",
                                         description="Compare the headline metrics of several eval reports."))

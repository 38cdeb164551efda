"""``n2m eval fad | clap-score | adherence | melody | musiccaps | prompts | compare | memorization``: the options of
each command, parsed into its settings dataclass for its job (:mod:`n2m.eval.jobs`: fad, clap-score, adherence; the
others in their own modules), which prints its figures as a table and writes ``report.json`` + ``report.html`` under
``--out``."""

from __future__ import annotations

import argparse

from n2m.cli import old_spellings
from n2m.config import FRACTION, NONNEGATIVE, POSITIVE, POSITIVE_INT, job, leaf, number
from n2m.eval.cli_options import (
    BOOTSTRAP,
    EMBEDDING_HELP,
    add_embedding_options,
    add_fad_options,
    add_output_options,
    add_probe_options,
)
from n2m.eval.melody_agreement import FRAME_RATE, MAX_FRAME_RATE
from n2m.eval.musiccaps import GENERATED_SECONDS, SUBSETS, generate_seconds
from n2m.eval.options import MAX_BOOTSTRAP

# ---------------------------------------------------------------------------------------------------------------------
# fad


def add_fad(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", required=True, nargs="+", help="reference audio: directories, globs or .txt lists")
    p.add_argument("--generated", required=True, nargs="+", help="generated audio: directories, globs or .txt lists")
    p.add_argument("--embedding", required=True, action="append", metavar="NAME[:ARGS]",
                   help="embedding model, repeatable: " + EMBEDDING_HELP)
    add_fad_options(p)
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, job("n2m.eval.jobs:run_fad"))


# ---------------------------------------------------------------------------------------------------------------------
# clap-score


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
    leaf(p, job("n2m.eval.jobs:run_clap_score"))


# ---------------------------------------------------------------------------------------------------------------------
# adherence


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
    leaf(p, job("n2m.eval.jobs:run_adherence"))


# ---------------------------------------------------------------------------------------------------------------------
# melody


def add_melody(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generated", required=True, nargs="+",
                   help="clips of n2m sample --melody: directories, globs or .txt lists; each clip's JSON sidecar "
                        "names its melody source (path and SHA-256)")
    p.add_argument("--sources", metavar="DIR_OR_MANIFEST",
                   help="where moved melody sources are now: a directory, glob, .txt list or JSON-lines manifest with "
                        "'path'; a source is recognised by its SHA-256, never by its name")
    p.add_argument("--frame-rate", type=number(float, low=0, high=MAX_FRAME_RATE, low_open=True), default=FRAME_RATE,
                   metavar="R", help=f"melody frames per second (default %(default)s; at most {MAX_FRAME_RATE:g}, the "
                                     "analysis frame rate)")
    p.add_argument("--bootstrap", type=BOOTSTRAP, default=1000, metavar="N",
                   help=f"resamples of the clips for the 95%% intervals, at most {MAX_BOOTSTRAP}; 0 disables")
    add_output_options(p)
    leaf(p, job("n2m.eval.melody_agreement:run_melody"))


# ---------------------------------------------------------------------------------------------------------------------
# musiccaps


def add_musiccaps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--captions", required=True, help="caption CSV (MusicCaps: musiccaps-public.csv), or JSON lines "
                                                     "(.jsonl, e.g. n2m eval prompts --out: --id-column id "
                                                     "--caption-column text)")
    p.add_argument("--reference-audio", required=True, help="directory of reference clips named by id ({ytid}.wav)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--generated", help="directory of generated audio named by id ({ytid}.wav)")
    source.add_argument("--checkpoints", metavar="DIR|STAGE=PATH,...",
                        help="generate first (into OUT/generated, resumable) through training's sampling API from "
                             "these stage checkpoints (as 'n2m sample --checkpoints')")
    p.add_argument("--takes", nargs="+", metavar="DIR",
                   help="more clips of the same prompts (e.g. n2m sample --num-samples 3 --seed 1 --out DIR; each "
                        "clip's JSON sidecar names its prompt): FAD and the musicnn adherence judge them with "
                        "--generated, each prompt's tag agreement and probe accuracy the mean over its clips")
    p.add_argument("--subset", default="all", choices=sorted(SUBSETS),
                   help="all rows, or the is_audioset_eval rows (2,858 in MusicCaps)")
    p.add_argument("--id-column", default="ytid", help="CSV column naming the clip id (file stem)")
    p.add_argument("--caption-column", default="caption", help="CSV column with the prompt text")
    p.add_argument("--vggish", metavar="WEIGHTS", help="torchvggish state dict for FAD_VGG")
    old_spellings(p, p.add_argument("--joint-model", metavar="DIR",
                                    help="CLAP model directory for FAD_CLAP and the CLAP score"), "--clap")
    p.add_argument("--embedding", action="append", metavar="NAME[:ARGS]",
                   help="more judges, repeatable: " + EMBEDDING_HELP + ". musicnn adds the adherence section "
                        "(tag agreement with the references; the probe with --probe-labels)")
    gen = p.add_argument_group("generation (with --checkpoints; defaults: the paper's per-stage settings)")
    gen.add_argument("--cascade", default="waveform", choices=("waveform", "spectrogram"), help="which cascade")
    gen.add_argument("--generate-seconds", type=generate_seconds, default=GENERATED_SECONDS,
                     help="length of each generated clip (as n2m sample --seconds); the middle --crop-seconds are "
                          "scored")
    gen.add_argument("--sampler", help="ancestral, ddim or dpmpp for every stage")
    gen.add_argument("--steps", type=POSITIVE_INT, help="sampling steps for every stage")
    gen.add_argument("--guidance", type=NONNEGATIVE, help="classifier-free guidance scale of the text stages")
    gen.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="clips sampled together")
    add_probe_options(p)
    add_fad_options(p)
    add_embedding_options(p)
    add_output_options(p)
    p.set_defaults(crop_seconds=10.0, band_rate=16000)
    leaf(p, job("n2m.eval.musiccaps:run_musiccaps"))


# ---------------------------------------------------------------------------------------------------------------------
# prompts


def add_prompts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="track manifest (JSON lines, CSV/TSV or Parquet) with 'path' and "
                                                     "a caption column (n2m synth's manifest.jsonl)")
    p.add_argument("--out", required=True, help="prompts file to write: JSON lines with 'id' (audio file stem) and 'text'")
    p.add_argument("--reference-list", help="also write the kept tracks' audio paths, one a line, to this text file")
    p.add_argument("--caption-column", default="caption", help="column holding the prompt text (default %(default)s)")
    p.add_argument("--holdout-only", action="store_true", help="keep only rows marked \"holdout\": true")
    leaf(p, job("n2m.eval.prompts:run_prompts"))


# ---------------------------------------------------------------------------------------------------------------------
# compare


def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("reports", nargs="+", help="report.json files or report directories")
    p.add_argument("--out", help="directory for compare.json and compare.html")
    p.add_argument("--html", help="write the page here instead of OUT/compare.html (compare.json goes to --out, "
                                  "or next to this file)")
    p.add_argument("--title", default="n2m eval compare", help="page title")
    sec = p.add_argument_group("more sections on the page (and in compare.json)")
    sec.add_argument("--label-eval", metavar="FILE", help="an n2m label-eval --out report: its precision table")
    sec.add_argument("--training-logs", nargs="+", metavar="RUNDIR",
                     help="n2m train run directories: loss curves from RUNDIR/csv/metrics.csv")
    bars = p.add_argument_group("quality bars (pass/fail from the figures; n2m.eval.compare_bars). Judged without a flag: "
                                "each run's samples are audio, not noise, when its report has spectral flatness")
    bars.add_argument("--baseline", metavar="NAME", help="report name the others must beat on FAD (e.g. an "
                                                          "untrained model)")
    bars.add_argument("--min-fad-gain", type=FRACTION, default=0.3,
                      help="required relative FAD reduction vs --baseline (default %(default)s)")
    bars.add_argument("--min-probe-ratio", type=POSITIVE, metavar="R",
                      help="bar: each run's musicnn probe accuracy (n2m eval musiccaps/adherence --probe-labels) "
                           ">= R x its chance; shown beside the baseline's and the real held-out tracks' accuracy")
    bars.add_argument("--tag-gain", action="store_true",
                      help="bar: each run's musicnn tag agreement above shuffled, its 95%% interval above zero")
    bars.add_argument("--precision-aspects", default="style,instrument",
                      help="label-eval aspects whose precision must beat chance (default %(default)s)")
    bars.add_argument("--min-precision-ratio", type=POSITIVE, default=3.0,
                      help="required precision / chance of those aspects (default %(default)s)")
    bars.add_argument("--label-subset", default="holdout",
                      help="label-eval subset the precision bar reads (default %(default)s)")
    leaf(p, job("n2m.eval.compare:run_compare"))


# ---------------------------------------------------------------------------------------------------------------------
# memorization


def add_memorization(p: argparse.ArgumentParser) -> None:
    p.add_argument("--generated", required=True, nargs="+", help="generated audio: directories, globs or .txt lists")
    p.add_argument("--build", required=True, help="the n2m build the model was trained on (OUT of n2m build)")
    p.add_argument("--embedding", default="musicnn", metavar="NAME[:ARGS]",
                   help="embedding of the nearest-neighbour view: musicnn[:MODEL[:LAYER]] (default: MSD_musicnn "
                        "penultimate, installed by n2m models fetch), clap:DIR or vggish:WEIGHTS.pth. --crop-seconds "
                        "and --band-rate apply to every clip, in both views")
    p.add_argument("--prompts-audio", metavar="DIR", help="audio prompts, named by generated id (or by the sidecar's "
                                                          "prompt_id); default: the audio_prompt of each sidecar")
    data = p.add_argument_group("training and held-out clips")
    data.add_argument("--train-splits", default="train", help="comma-separated splits the model trained on "
                                                              "(default %(default)s); every other clip is held out")
    data.add_argument("--exclude-holdout", action="store_true",
                      help="as n2m train --exclude-holdout: clips marked held out are not training clips (they "
                           "calibrate the thresholds instead)")
    g = p.add_argument_group("thresholds")
    g.add_argument("--alpha", type=number(float, low=0, high=1, low_open=True, high_open=True), default=0.01,
                   help="target false-positive rate of each view: a clip is flagged above the ceil((n+1)(1-alpha))-th "
                        "smallest best score of n held-out clips (split conformal; default %(default)s)")
    g.add_argument("--calibration-clips", type=POSITIVE_INT, default=500, metavar="N",
                   help="held-out clips scored for the calibration (a seeded sample when there are more)")
    g.add_argument("--match-threshold", type=FRACTION, metavar="S",
                   help="fixed audio-match threshold instead of the calibrated one")
    g.add_argument("--embedding-threshold", type=number(float, low=-1, high=1), metavar="S",
                   help="fixed embedding-cosine threshold instead of the calibrated one")
    g.add_argument("--neighbours", type=POSITIVE_INT, default=3, help="nearest training clips listed per view")
    add_embedding_options(p)
    add_output_options(p)
    leaf(p, job("n2m.eval.memorization:run_memorization"))


# ---------------------------------------------------------------------------------------------------------------------
# Registration


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    add_melody(sub.add_parser(
        "melody", help="do clips of n2m sample --melody follow their melody source? pitch-class agreement, paired "
                       "vs shuffled (chance 1/12)",
        description="Pairs each generated clip with the melody source its sidecar names (verified by SHA-256; moved "
                    "sources found under --sources) and measures their melody agreement: the share of frames, among "
                    "those where both are voiced, whose dominant pitch class (n2m.melody's argmax chroma, octave-free) "
                    "is the same. Paired (each clip vs its own source) against shuffled (vs the other clips' "
                    "sources), and the gain paired - shuffled with a bootstrap interval over clips. Chance is 1/12 "
                    "for independent melodies uniform over the 12 pitch classes; the shuffled figure is the chance "
                    "level of the actual sources."))
    add_musiccaps(sub.add_parser(
        "musiccaps", help="the MusicCaps protocol of Noise2Music (FAD_VGG, FAD_CLAP, FAD_musicnn, CLAP score, "
                          "musicnn adherence)",
        description="Noise2Music Section 5: prompts from a caption CSV, references named by id, generated audio "
                    "scored on its middle 10 s at 16 kHz."))
    add_prompts(sub.add_parser(
        "prompts", help="prompts + reference audio list from a track manifest (e.g. held-out tracks)",
        description="An evaluation set from a track manifest: prompts (JSON lines id, text) for n2m sample and "
                    "clap-score, and the matching reference audio list for fad and clap-score, paired by file stem."))
    add_compare(sub.add_parser("compare", help="put report.json files side by side",
                                         description="Compare the headline metrics of several eval reports."))
    add_memorization(sub.add_parser(
        "memorization", help="does a model reproduce its training clips? nearest training clips by embedding and by "
                             "an alignment-robust audio match, thresholds calibrated on held-out clips",
        description="For every generated clip, its nearest training clips of --build by embedding and by a chroma "
                    "match over all time offsets; the share of clips above thresholds calibrated on the build's "
                    "held-out clips (split conformal, false-positive rate alpha); matches playable side by side; with "
                    "audio prompts, closeness to the prompt vs the training clips."))

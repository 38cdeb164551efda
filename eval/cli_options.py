"""The option groups shared by the ``n2m eval`` commands' parsers (embedding models, FAD extras, output, the musicnn
probe): the command-line side of :mod:`n2m.eval.options`, whose settings dataclasses have a field per option here."""

from __future__ import annotations

import argparse

from n2m.config import MAX_SAMPLE_RATE, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, SAMPLE_RATE, number
from n2m.eval.options import MAX_BOOTSTRAP, MAX_INF_SIZES

BOOTSTRAP = number(int, low=0, high=MAX_BOOTSTRAP)
EMBEDDING_HELP = ("vggish:WEIGHTS.pth (torchvggish state dict), clap:DIR (a CLAP model directory) or "
                  "musicnn[:MODEL[:LAYER]] (default MSD_musicnn:penultimate; each 3 s patch one sample)")


def add_embedding_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("embedding models")
    g.add_argument("--device", default="cpu", help="torch device for the embedding models (cpu, cuda, cuda:1)")
    g.add_argument("--vggish-framing", default="torchvggish", choices=("torchvggish", "google"),
                   help="torchvggish: non-overlapping 0.96 s examples, raw samples (fadtk); google: 1 s windows with a "
                        "0.5 s hop, x / max(0.1, max|x|) (Google's FAD). Values differ by several percent")
    g.add_argument("--vggish-postprocess", default="none", choices=("none", "pca", "pca_quantized"),
                   help="raw 128-d embeddings (none, as fadtk), AudioSet PCA whitening, or PCA + 8-bit quantisation")
    g.add_argument("--vggish-pca", metavar="FILE", help="PCA parameters (pca_eigen_vectors, pca_means) when they are "
                                                        "not in the weights file")
    g.add_argument("--clap-min-seconds", type=NONNEGATIVE, default=1.0,
                   help="clips shorter than this are excluded from CLAP embeddings (reported as too_short)")
    g.add_argument("--crop-seconds", type=POSITIVE, default=None,
                   help="keep the middle N seconds of longer clips before embedding (musiccaps default: 10)")
    g.add_argument("--band-rate", type=SAMPLE_RATE, default=None,
                   help=f"resample through this rate (Hz, at most {MAX_SAMPLE_RATE}) before the model's own "
                        "(musiccaps default: 16000, as the paper evaluated 16 kHz audio); applied to both sets")
    g.add_argument("--cache-dir", default=None, help="embedding cache (default $N2M_CACHE/eval or ~/.cache/n2m/eval); "
                                                     "entries are keyed by file content, model hash and settings")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write cached embeddings")


def add_fad_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("FAD")
    g.add_argument("--inf", action="store_true", help="also FAD-inf: FAD on seeded subsets fitted against 1/n, "
                                                      "extrapolated to infinitely many samples")
    g.add_argument("--inf-sizes", type=number(int, low=2, high=MAX_INF_SIZES), default=15,
                   help=f"number of subset sizes of the FAD-inf line fit (2 to {MAX_INF_SIZES})")
    g.add_argument("--per-song", action="store_true", help="also the FAD of each generated file against the reference")
    g.add_argument("--bootstrap", type=BOOTSTRAP, default=200, metavar="N",
                   help=f"resamples (of whole files, both sets) for the 95%% interval, at most {MAX_BOOTSTRAP}; "
                        "0 disables")


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", help="report directory (default reports/JOB-TIME)")
    g.add_argument("--seed", type=NONNEGATIVE_INT, default=0,
                   help="seed (>= 0) of FAD-inf subsets, bootstrap, shuffled prompts, samples")
    g.add_argument("--samples", type=NONNEGATIVE_INT, default=6,
                   help="prompts/clips with audio players on the page (0: none)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def add_probe_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("musicnn probe")
    g.add_argument("--probe-labels", metavar="MANIFEST", help="JSON-lines track manifest (n2m synth's manifest.jsonl) "
                                                              "with 'path', 'holdout' and the class column: generated "
                                                              "clips (named by track file stem) are classified by the "
                                                              "nearest class centroid of the tracks not held out")
    g.add_argument("--probe-column", default="style", help="manifest column naming each track's class "
                                                           "(default %(default)s)")

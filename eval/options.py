"""Options and output steps shared by the ``n2m eval`` commands (embedding models, FAD extras, report location)."""

from __future__ import annotations

import argparse
import datetime as _dt
from pathlib import Path
from typing import Any

from eval import report as reports
from eval.audio_sets import Preprocess, embed_files
from eval.embeddings import EmbeddingOptions
from eval.scoring import FadOptions
from n2m.config import MAX_SAMPLE_RATE, NONNEGATIVE, NONNEGATIVE_INT, POSITIVE, SAMPLE_RATE, number
from n2m.names import check_name

FAD_LABELS = {"vggish": "FAD_VGG", "clap": "FAD_CLAP", "musicnn": "FAD_musicnn"}
# Caps that keep a typo from exhausting memory: a bootstrap draws [resamples, items] indices at once
# (eval.clap_score.bootstrap_mean), and FAD-inf's sizes are distinct subset sizes fitted by a line (15 by default).
MAX_BOOTSTRAP = 10_000  # Efron & Tibshirani (1993, ch. 13): 1,000-2,000 resamples suffice for percentile intervals
MAX_INF_SIZES = 1_000
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


def embedding_options(args: argparse.Namespace) -> EmbeddingOptions:
    return EmbeddingOptions(device=args.device, vggish_framing=args.vggish_framing,
                            vggish_postprocess=args.vggish_postprocess, vggish_pca=args.vggish_pca,
                            clap_min_s=args.clap_min_seconds)


def fad_options(args: argparse.Namespace) -> FadOptions:
    return FadOptions(inf=args.inf, inf_sizes=args.inf_sizes, per_song=args.per_song, bootstrap=args.bootstrap,
                      seed=args.seed)


def cache_root(args: argparse.Namespace) -> Path | None:
    from eval.cache import default_root

    return None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_root()


def out_dir(args: argparse.Namespace, job: str) -> Path:
    """The report folder: ``--out``, else ``reports/{job}-{time}``. Its last part names the report (report.json, the
    page title, the columns and ``--baseline`` of n2m eval compare), so it must be one safe name
    (:func:`n2m.names.check_name`): ``--out .`` or ``--out runs/..`` is refused before any work."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or f"reports/{job}-{stamp}")
    check_name(out.name, f"the report name (last part of --out {args.out!r})")
    return out


def model_info(embedder) -> dict[str, Any]:
    return {"name": embedder.name, "id": embedder.model_id, "sample_rate": embedder.sample_rate,
            "settings": embedder.settings, "min_seconds": embedder.min_seconds}


def embed_both(embedder, reference: list[Path], generated: list[Path], preprocess: Preprocess, cache: Path | None):
    ref = embed_files(reference, embedder, preprocess, cache, desc=f"{embedder.name}: reference")
    gen = embed_files(generated, embedder, preprocess, cache, desc=f"{embedder.name}: generated")
    return ref, gen


def add_probe_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("musicnn probe")
    g.add_argument("--probe-labels", metavar="MANIFEST", help="JSON-lines track manifest (n2m synth's manifest.jsonl) "
                                                              "with 'path', 'holdout' and the class column: generated "
                                                              "clips (named by track file stem) are classified by the "
                                                              "nearest class centroid of the tracks not held out")
    g.add_argument("--probe-column", default="style", help="manifest column naming each track's class "
                                                           "(default %(default)s)")


def probe_labels(args: argparse.Namespace):
    """The ``--probe-labels`` manifest's classes, or None."""
    from eval.adherence import read_probe_labels

    return read_probe_labels(args.probe_labels, args.probe_column) if args.probe_labels else None


def finish(report: dict[str, Any], out: Path) -> int:
    """Print the headline table and where the report went; write it."""
    json_path, html_path = reports.write(report, out)
    print(reports.text_table(["metric", "value", "95% interval", "n", "note"], reports.metric_rows(report["metrics"])))
    for name, s in report.get("sets", {}).items():
        if s.get("excluded"):
            reasons = ", ".join(f"{k}: {v}" for k, v in s["excluded_by_reason"].items())
            print(f"{name}: {s['excluded']} of {s['files']} files excluded ({reasons})")
    for warning in report.get("warnings", []):
        print(f"warning: {warning}")
    print(f"report: {json_path}  {html_path}")
    return 0


def pair_items(generated: list[Path], reference: list[Path], prompts: dict[str, str] | None = None) -> list[dict]:
    """Audio-player rows: each generated id with its reference of the same id (when any) and prompt."""
    refs = {p.stem: p for p in reference}
    items = []
    for path in generated:
        items.append({"id": path.stem, "prompt": (prompts or {}).get(path.stem), "generated": str(path),
                      "reference": str(refs[path.stem]) if path.stem in refs else None})
    return items

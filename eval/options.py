"""Settings and output steps shared by the ``n2m eval`` commands: the settings dataclasses of the option groups
(embedding models, FAD extras, report location and seed, the musicnn probe), which each command's settings extend (the
options themselves: :mod:`n2m.eval.cli_options`), and the steps that read them."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2m.eval import report as reports
from n2m.eval.audio_sets import Preprocess, embed_files
from n2m.eval.embeddings import EmbeddingOptions
from n2m.eval.scoring import FadOptions
from n2m.names import check_name

FAD_LABELS = {"vggish": "FAD_VGG", "clap": "FAD_CLAP", "musicnn": "FAD_musicnn"}  # the paper's names; others FAD_{name}
# Caps that keep a typo from exhausting memory: a bootstrap draws [resamples, items] indices at once
# (n2m.eval.clap_score.bootstrap_mean), and FAD-inf's sizes are distinct subset sizes fitted by a line (15 by default).
MAX_BOOTSTRAP = 10_000  # Efron & Tibshirani (1993, ch. 13): 1,000-2,000 resamples suffice for percentile intervals
MAX_INF_SIZES = 1_000


@dataclass(frozen=True, kw_only=True)
class EmbeddingSettings:
    """The embedding models' settings (``n2m eval ... --help``, "embedding models"): device, VGGish framing and
    post-processing, CLAP's shortest clip, the crop and band-limiting applied before any model, the cache."""

    device: str = "cpu"
    vggish_framing: str = "torchvggish"
    vggish_postprocess: str = "none"
    vggish_pca: str | None = None
    clap_min_seconds: float = 1.0
    crop_seconds: float | None = None
    band_rate: int | None = None
    cache_dir: str | None = None
    no_cache: bool = False


@dataclass(frozen=True, kw_only=True)
class FadExtras:
    """FAD-inf (``inf``, ``inf_sizes`` subset sizes), per-song FAD, ``bootstrap`` resamples for the interval."""

    inf: bool = False
    inf_sizes: int = 15
    per_song: bool = False
    bootstrap: int = 200


@dataclass(frozen=True, kw_only=True)
class OutputSettings:
    """Where the report goes (``out``, default ``reports/JOB-TIME``), the ``seed`` of every random draw, the number
    of audio players on the page (``samples``), and ``quiet`` (no progress bars)."""

    out: str | None = None
    seed: int = 0
    samples: int = 6
    quiet: bool = False


@dataclass(frozen=True, kw_only=True)
class ProbeSettings:
    """The musicnn probe's classes: the ``probe_labels`` manifest and its ``probe_column``."""

    probe_labels: str | None = None
    probe_column: str = "style"


def fad_label(embedding: str) -> str:
    """The metric name of FAD under ``embedding`` (an :data:`n2m.eval.embeddings.EMBEDDINGS` name)."""
    return FAD_LABELS.get(embedding, f"FAD_{embedding}")


def embedding_options(settings: EmbeddingSettings) -> EmbeddingOptions:
    return EmbeddingOptions(device=settings.device, vggish_framing=settings.vggish_framing,
                            vggish_postprocess=settings.vggish_postprocess, vggish_pca=settings.vggish_pca,
                            clap_min_s=settings.clap_min_seconds)


def fad_options(extras: FadExtras, seed: int) -> FadOptions:
    return FadOptions(inf=extras.inf, inf_sizes=extras.inf_sizes, per_song=extras.per_song, bootstrap=extras.bootstrap,
                      seed=seed)


def cache_root(settings: EmbeddingSettings) -> Path | None:
    from n2m.eval.cache import default_root

    return None if settings.no_cache else Path(settings.cache_dir) if settings.cache_dir else default_root()


def out_dir(settings: OutputSettings, job: str) -> Path:
    """The report folder: ``--out``, else ``reports/{job}-{time}``. Its last part names the report (report.json, the
    page title, the columns and ``--baseline`` of n2m eval compare), so it must be one safe name
    (:func:`n2m.names.check_name`): ``--out .`` or ``--out runs/..`` is refused before any work."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(settings.out or f"reports/{job}-{stamp}")
    check_name(out.name, f"the report name (last part of --out {settings.out!r})")
    return out


def model_info(embedder) -> dict[str, Any]:
    return {"name": embedder.name, "id": embedder.model_id, "sample_rate": embedder.sample_rate,
            "settings": embedder.settings, "min_seconds": embedder.min_seconds}


def embed_both(embedder, reference: list[Path], generated: list[Path], preprocess: Preprocess, cache: Path | None):
    ref = embed_files(reference, embedder, preprocess, cache, desc=f"{embedder.name}: reference")
    gen = embed_files(generated, embedder, preprocess, cache, desc=f"{embedder.name}: generated")
    return ref, gen


def probe_labels(settings: ProbeSettings):
    """The ``--probe-labels`` manifest's classes, or None."""
    from n2m.eval.adherence import read_probe_labels

    return read_probe_labels(settings.probe_labels, settings.probe_column) if settings.probe_labels else None


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

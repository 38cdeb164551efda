"""``n2m label-eval``: how right a label set is, against ground truth (the synthetic corpus's manifest).

Per aspect (style, instrument, mood, tempo class) the *precision* of the assigned short-form captions whose vocabulary
aspect maps to it (:data:`ASPECTS`), next to *chance*: the precision of a caption drawn uniformly from that aspect's
vocabulary entries for the same clip (closed form: the fraction of the aspect's entries that are right for the clip),
and the ratio's 95% percentile bootstrap interval over tracks (:func:`ratio_interval`: a track's clips share its truth,
so they are resampled together).
A caption is right when, after lower-casing, splitting on non-letters and dropping a plural ``s``, the words of a
ground-truth value appear in order inside the caption or the caption's inside a ground-truth value (``"lo-fi hip hop"``
is right for style ``lo-fi``; ``"bass"`` for instrument ``electric bass``). Tempo captions map to classes by keyword
(:data:`TEMPO_WORDS`) and the truth's BPM by ``--tempo-bounds``; tempo words without a class are not scored.

Also the mean CLAP score (cosine of the stored audio and text embeddings) of the assigned captions against the same
captions given to other clips (a seeded derangement), per vocabulary. Everything is reported for all matched clips and
for the held-out tracks alone (``holdout: true``; ``--holdout-only`` reports just those).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from n2m.config import POSITIVE, checked
from n2m.errors import UserError
from n2m.labeling.io import load_npz
from n2m.labeling.truth import join_sources, truth_of_keys
from n2m.labeling.vocabset import entries_of
from n2m.layout import read_label_manifest
from n2m.manifest import is_holdout
from n2m.provenance import now_iso, versions
from n2m.storage import Store, glob, write_json

TEMPO_WORDS: dict[str, tuple[str, ...]] = {
    "slow": ("slow", "very slow", "slow tempo", "slow ballad", "leisurely pace", "slow bpm", "downtempo", "largo",
             "adagio"),
    "medium": ("mid-tempo", "midtempo", "medium tempo", "moderate tempo", "steady tempo", "andante", "moderato"),
    "fast": ("fast", "very fast", "fast tempo", "upbeat", "uptempo", "up-tempo", "brisk tempo", "high bpm",
             "double-time", "allegro", "presto", "rapid"),
}


def _words(text: str) -> tuple[str, ...]:
    return tuple(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in re.findall(r"[a-z0-9&]+", text.lower()))


def _contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    n = len(inner)
    return n > 0 and any(outer[i:i + n] == inner for i in range(len(outer) - n + 1))


def text_matches(caption: str, truths: list[str]) -> bool:
    """Word-sequence containment either way (module docstring)."""
    c = _words(caption)
    return any(_contains(c, _words(t)) or _contains(_words(t), c) for t in truths if str(t).strip())


def tempo_class(bpm: float, bounds: tuple[float, float]) -> str:
    return "slow" if bpm < bounds[0] else ("medium" if bpm < bounds[1] else "fast")


_TEMPO_OF_TEXT = {" ".join(_words(w)): cls for cls, words in TEMPO_WORDS.items() for w in words}


@dataclass(frozen=True)
class Aspect:
    """How one aspect is judged: vocabulary aspects it covers, ground truth of a row, and the judge."""

    vocab_aspects: tuple[str, ...]
    truth: Callable[[dict, tuple[float, float]], list[str]]
    judge: Callable[[str, list[str]], bool | None]  # None: caption not scorable for this aspect


def _listed(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _tempo_judge(caption: str, truth: list[str]) -> bool | None:
    cls = _TEMPO_OF_TEXT.get(" ".join(_words(caption)))
    return None if cls is None else cls in truth


ASPECTS: dict[str, Aspect] = {
    "style": Aspect(("genre", "subgenre", "style"), lambda r, b: _listed(r.get("style")), text_matches),
    "instrument": Aspect(("instrument", "instruments"), lambda r, b: _listed(r.get("instruments")), text_matches),
    "mood": Aspect(("mood", "emotion"), lambda r, b: _listed(r.get("mood")), text_matches),
    "tempo": Aspect(("tempo",), lambda r, b: [tempo_class(float(r["bpm"]), b)] if r.get("bpm") not in (None, "")
                    else [], _tempo_judge),
}


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation


def ratio_interval(right: np.ndarray, expected: np.ndarray, reps: int = 1000, level: float = 0.95,
                   seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of the ratio of sums ``sum(right) /
    sum(expected)`` over ``T`` tracks: ``right[t]`` the right captions of track t's clips, ``expected[t]`` the number
    chance expects of them (each caption's chance summed). ``reps`` resamples of the tracks with replacement, seeded;
    ``(None, None)`` with fewer than two tracks."""
    r, e = np.asarray(right, np.float64), np.asarray(expected, np.float64)
    if r.shape != e.shape or r.ndim != 1:
        raise ValueError("right and expected must be 1-D and of one length")
    if r.size < 2:
        return None, None
    picks = np.random.default_rng(seed).integers(0, r.size, size=(reps, r.size))
    totals = e[picks].sum(axis=1)
    ratios = np.divide(r[picks].sum(axis=1), totals, out=np.full(reps, np.nan), where=totals > 0)
    if not np.isfinite(ratios).any():
        return None, None
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(ratios, [tail, 100 - tail])
    return float(low), float(high)


def track_of(key: str, row: dict) -> str:
    """The track a clip comes from: the manifest's ``track_id``, else its ``path``, else the clip key itself."""
    return str(row.get("track_id") or row.get("path") or key)


def aspect_precision(labels: dict[str, list[str]], truth: dict[str, dict], entries: dict[str, list[str]],
                     bounds: tuple[float, float]) -> dict:
    """Per aspect: precision of assigned captions, chance, ratio with its interval over tracks (``ratio_low``,
    ``ratio_high``; :func:`ratio_interval`). ``labels``: key -> assigned short captions; ``entries``: aspect name ->
    that aspect's vocabulary texts; ``truth``: key -> manifest row. An aspect the vocabulary has no entries of is not
    reported (a vocabulary of moods alone has no instrument precision)."""
    out = {}
    for name, aspect in ASPECTS.items():
        pool = entries.get(name, [])
        if not pool:
            continue
        aspect_texts = set(pool)
        right = judged = 0
        chance_sum = 0.0
        clips = 0
        per_track: dict[str, list[float]] = {}  # track -> [right, expected by chance]
        for key, captions in labels.items():
            row = truth.get(key)
            if row is None:
                continue
            values = aspect.truth(row, bounds)
            if not values:
                continue
            verdicts = [aspect.judge(c, values) for c in captions if c in aspect_texts]
            verdicts = [v for v in verdicts if v is not None]
            if not verdicts:
                continue
            pool_verdicts = [v for v in (aspect.judge(t, values) for t in pool) if v is not None]
            chance = float(np.mean(pool_verdicts)) if pool_verdicts else 0.0
            right += sum(verdicts)
            judged += len(verdicts)
            chance_sum += chance * len(verdicts)
            clips += 1
            counts = per_track.setdefault(track_of(key, row), [0.0, 0.0])
            counts[0] += sum(verdicts)
            counts[1] += chance * len(verdicts)
        precision = right / judged if judged else None
        chance = chance_sum / judged if judged else None
        low, high = ratio_interval(*np.array(list(per_track.values())).T) if per_track else (None, None)
        ratio = (precision / chance) if precision is not None and chance else None
        out[name] = {"precision": precision, "chance": chance, "captions": judged, "clips": clips,
                     "tracks": len(per_track), "ratio": ratio, "ratio_low": low, "ratio_high": high}
    return out


def clap_scores(keys: list[str], captions: dict[str, list[str]], audio: dict[str, np.ndarray],
                text_index: dict[str, int], text_emb: np.ndarray, seed: int = 0) -> dict:
    """Mean cosine of assigned captions vs the same captions moved to other clips (derangement)."""
    keys = [k for k in keys if k in audio and any(c in text_index for c in captions.get(k, []))]
    if len(keys) < 2:
        return {"clips": len(keys), "assigned": None, "shuffled": None}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(keys))
    partner = {keys[order[i]]: keys[order[(i + 1) % len(keys)]] for i in range(len(keys))}

    def mean_score(a_key: str, c_key: str) -> float:
        rows = [text_index[c] for c in captions[c_key] if c in text_index]
        return float((text_emb[rows] @ audio[a_key]).mean())

    assigned = float(np.mean([mean_score(k, k) for k in keys]))
    shuffled = float(np.mean([mean_score(k, partner[k]) for k in keys]))
    return {"clips": len(keys), "assigned": assigned, "shuffled": shuffled, "difference": assigned - shuffled}


def _load_labels(label_dir: str) -> dict[str, dict[str, list[str]]]:
    """``{vocab: {key: captions}}`` from a label set's tables."""
    out: dict[str, dict[str, list[str]]] = {}
    for path in glob(f"{label_dir.rstrip('/')}/*.parquet"):
        with Store(path).open_read(path) as handle:
            table = pq.read_table(handle, columns=["key", "vocab", "captions"])
        for key, vocab, captions in zip(*(table[c].to_pylist() for c in ("key", "vocab", "captions"))):
            out.setdefault(vocab, {})[key] = captions or []
    return out


def evaluate(label_dir: str, truth_path: str, bounds: tuple[float, float], holdout_only: bool = False) -> dict:
    manifest = read_label_manifest(label_dir)
    build = manifest["build"]["root"]
    labels = _load_labels(label_dir)
    by_source = join_sources(build, truth_path)
    keys = sorted({k for per in labels.values() for k in per})
    truth = truth_of_keys(keys, by_source)
    if not truth:
        raise UserError(f"no labelled clip matches a row of {truth_path}")
    audio: dict[str, np.ndarray] = {}
    files = manifest["model"].get("embedding_files") or glob(f"{manifest['model']['embeddings']}/*.npz")
    for path in files:
        data = load_npz(path)
        audio.update(zip((str(k) for k in data["keys"]), data["embeddings"]))
    subsets = {"holdout": [k for k in truth if is_holdout(truth[k])]}
    if not holdout_only:
        subsets = {"all": list(truth), **subsets}
    report = {"labels": str(Path(label_dir).resolve()), "truth": str(Path(truth_path).resolve()),
              "created": now_iso(), "tempo_bounds": list(bounds), "label_manifest": {
                  k: manifest[k] for k in ("name", "k", "k_prime", "seed", "model")}, "subsets": {}}
    for subset, subset_keys in subsets.items():
        wanted = set(subset_keys)
        result = {"clips": len(subset_keys), "aspects": {}, "clap_score": {}}
        for vocab in manifest["vocabularies"]:
            per_key = {k: v for k, v in labels.get(vocab["name"], {}).items() if k in wanted}
            table = entries_of(vocab["path"], vocab["kind"], ("text", "kind", "aspect")).to_pylist()
            texts = [r["text"] for r in table]
            text_emb = np.load(vocab["text_embeddings"], mmap_mode="r")
            text_index = {}
            for i, text in enumerate(texts):
                text_index.setdefault(text, i)
            result["clap_score"][vocab["name"]] = clap_scores(sorted(per_key), per_key, audio, text_index, text_emb)
            if vocab["kind"] == "short":
                entries = {name: [r["text"] for r in table if r["kind"] == "short" and r["aspect"] in a.vocab_aspects]
                           for name, a in ASPECTS.items()}
                result["aspects"][vocab["name"]] = aspect_precision(per_key, truth, entries, bounds)
        report["subsets"][subset] = result
    return report


# ---------------------------------------------------------------------------------------------------------------------
# The job (``n2m label-eval``; the command line: n2m.labeling.label_eval_cli)


@dataclass(frozen=True, kw_only=True)
class LabelEvalSettings:
    """What ``n2m label-eval`` does: ``labels`` (a label set folder), ``truth`` (the manifest with the ground truth),
    ``out`` (also write the report there, as JSON), ``holdout_only``, ``tempo_bounds`` (``"SLOW,FAST"`` BPM)."""

    labels: str
    truth: str
    out: str | None = None
    holdout_only: bool = False
    tempo_bounds: str = "76,100"

    def __post_init__(self) -> None:
        self.bounds  # noqa: B018 (refused here, before any work)

    @property
    def bounds(self) -> tuple[float, float]:
        """``tempo_bounds`` as two BPM values ``(SLOW, FAST)``, SLOW < FAST."""
        try:
            low, high = (checked(x, POSITIVE, "--tempo-bounds") for x in self.tempo_bounds.split(","))
        except (ValueError, UserError):
            low = high = 0.0
        if not 0 < low < high:
            raise UserError(f"--tempo-bounds {self.tempo_bounds!r}: expected two BPM values SLOW < FAST, e.g. 76,100")
        return low, high


def ratio_text(m: dict) -> str:
    """An aspect's ratio and, when there is one, its interval: ``"3.9x [2.9, 4.9]"``."""
    if m.get("ratio") is None:
        return "-"
    low, high = m.get("ratio_low"), m.get("ratio_high")
    return f"{m['ratio']:.1f}x" + (f" [{low:.1f}, {high:.1f}]" if low is not None and high is not None else "")


def run_label_eval(settings: LabelEvalSettings) -> int:
    """Evaluate the label set against the truth; print the tables; write the report with ``out``."""
    report = evaluate(settings.labels, settings.truth, settings.bounds, settings.holdout_only)
    report["versions"] = versions()
    for subset, result in report["subsets"].items():
        print(f"== {subset}: {result['clips']} clips")
        for vocab, aspects in result["aspects"].items():
            print(f"  {vocab}: aspect      precision  chance  ratio [95% over tracks]  captions")
            for name, m in aspects.items():
                if m["precision"] is None:
                    print(f"    {name:<18} {'-':>9}  {'-':>6}  {'-':>23}  {m['captions']:>8}")
                    continue
                print(f"    {name:<18} {m['precision']:9.3f}  {m['chance']:6.3f}  {ratio_text(m):>23}  "
                      f"{m['captions']:>8}")
        for vocab, s in result["clap_score"].items():
            if s["assigned"] is not None:
                print(f"  CLAP score {vocab}: assigned {s['assigned']:.3f} vs shuffled {s['shuffled']:.3f} "
                      f"({s['clips']} clips)")
    if settings.out:
        write_json(settings.out, report)
        print(f"n2m label-eval: wrote {settings.out}")
    return 0



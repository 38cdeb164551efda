"""``n2m eval melody``: does a clip generated with ``n2m sample --melody FILE`` follow its melody source? (issue 16)

**Pairing.** Each generated clip's JSON sidecar (``x.wav`` -> ``x.json``, written by ``n2m sample``) names its melody
source in ``melody``: the file's path and SHA-256 (:meth:`n2m.training.conditioning.AudioFile.describe`). The source is the
file at that path when its content still has that hash, else the file under ``--sources`` (a directory, glob, ``.txt``
list or JSON-lines manifest with ``path``) with that hash, so a moved or renamed source is still found and an edited
one is never used. A clip that cannot be paired (no sidecar, sampled without ``--melody``, source gone or changed,
undecodable audio, no frame where both are voiced) is recorded with its reason and left out.

**Melody agreement** of a clip ``g`` and a source ``s``: both become their dominant pitch class per frame
(:func:`n2m.melody.melody_features`: MusicGen's argmax chroma, Copet et al. 2023, section 2.3; no octave, no timbre) at
``--frame-rate`` frames per second, aligned from their starts as the sampler aligns the condition (the source from its
start, trimmed or zero-padded to the clip). Over the voiced frames of both within the overlap,
``V = {t < min(F_g, F_s) : g_t and s_t voiced}``::

    agreement(g, s) = |{t in V : class_g(t) = class_s(t)}| / |V|

Two independent sequences, uniform over the 12 classes, agree on 1/12 of the frames (chance).

**Paired vs shuffled** (issue 16's figure; the same design as ``n2m eval adherence``'s tag agreement):
``paired_i = agreement(g_i, s_i)``; ``shuffled_i`` = the mean of ``agreement(g_i, s)`` over the other distinct sources
of the set (by content: clips sampled with the same melody share one source), which is the chance level of these very
sources (their pitch-class statistics need not be uniform); ``gain_i = paired_i - shuffled_i``. Each is reported as
its mean over clips with a percentile bootstrap interval over clips (:func:`n2m.eval.clap_score.bootstrap_mean`). Clips
that share a source are not independent, so the interval is then narrower than it should be (the report warns).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from n2m import melody
from n2m.config import resolved
from n2m.errors import UserError
from n2m.eval import report as reports
from n2m.eval.audio_sets import EmbeddedSet, Preprocess, by_id, embed_files, list_audio
from n2m.eval.clap_score import bootstrap_mean
from n2m.eval.options import OutputSettings, finish, model_info, out_dir
from n2m.manifest import read_rows
from n2m.progress import bar as progress_bar
from n2m.progress import honours_quiet
from n2m.provenance import file_hash
from n2m.schema import read_sidecar, sidecar_path

FRAME_RATE = 10.0
MAX_FRAME_RATE = melody.ANALYSIS_RATE / melody.HOP  # 62.5: faster output frames only repeat analysis frames
CHANCE = 1.0 / 12.0
UNVOICED = -1
MANIFEST_SUFFIXES = (".jsonl", ".json")


# ---------------------------------------------------------------------------------------------------------------------
# Melody frames as an eval "embedding" (n2m.eval.audio_sets then decodes them and records failures)


class MelodyFrames:
    """The melody condition as an :class:`n2m.eval.embeddings.Embedder`: ``embed`` gives the one-hot dominant pitch class
    per frame ``[F, 12]`` (all zero in silent frames) at ``frame_rate``."""

    name = "melody"
    model_id = "n2m.melody.melody_features"
    sample_rate = melody.ANALYSIS_RATE

    def __init__(self, frame_rate: float = FRAME_RATE) -> None:
        self.frame_rate = frame_rate
        self.min_seconds = 1.0 / frame_rate  # one whole frame
        self.settings = {"frame_rate": frame_rate, "n_fft": melody.N_FFT, "hop": melody.HOP,
                         "band_hz": [melody.FMIN, melody.FMAX], "silence_db": melody.SILENCE_DB}

    def embed(self, wave: np.ndarray) -> np.ndarray:
        return melody.melody_features(wave, self.sample_rate, self.frame_rate).T  # [F, 12]

    def fad_frames(self, raw: np.ndarray) -> np.ndarray:
        return raw

    def clip_embedding(self, raw: np.ndarray) -> np.ndarray:
        return raw.mean(axis=0)  # [12]: the share of frames in each class


def pitch_classes(onehot: np.ndarray) -> np.ndarray:
    """One-hot frames ``[F, 12]`` -> class per frame ``[F]`` (0 = C), :data:`UNVOICED` where a frame is all zero."""
    return np.where(onehot.any(axis=1), onehot.argmax(axis=1), UNVOICED).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------------------
# Agreement


def agreement_counts(clip: np.ndarray, source: np.ndarray) -> tuple[int, int]:
    """``(equal, voiced)``: frames of the overlap ``t < min(F_g, F_s)`` where both pitch-class sequences (``[F_g]``,
    ``[F_s]``, :func:`pitch_classes`) are voiced, and those of them with the same class."""
    n = min(len(clip), len(source))
    a, b = clip[:n], source[:n]
    voiced = (a != UNVOICED) & (b != UNVOICED)
    return int(np.count_nonzero(voiced & (a == b))), int(np.count_nonzero(voiced))


@dataclass(frozen=True)
class MelodyAgreement:
    """Per scored clip (sorted ids): ``paired[i]`` = agreement with its own source over ``voiced[i]`` frames,
    ``shuffled[i]`` = mean agreement with the other distinct sources (``nan`` when there is none with a voiced frame
    in common); ``silent`` are the clips that share no voiced frame with their own source (not scored)."""

    ids: tuple[str, ...]
    paired: np.ndarray  # [N]
    shuffled: np.ndarray  # [N]
    voiced: np.ndarray  # [N] int
    sources: int
    silent: tuple[str, ...]

    def rows(self, reps: int, seed: int) -> dict[str, dict[str, Any]]:
        """The headline rows: paired, shuffled, gain (each with its bootstrap interval over clips) and chance."""
        have = np.isfinite(self.shuffled)
        notes = {"melody_agreement": (self.paired, "share of voiced frames whose pitch class equals the clip's own "
                                                   "melody source's"),
                 "melody_agreement_shuffled": (self.shuffled[have], "the same against the other clips' sources"),
                 "melody_agreement_gain": ((self.paired - self.shuffled)[have], "paired minus shuffled (> 0: clips "
                                                                                 "follow their own melody)")}
        rows = {}
        for name, (values, note) in notes.items():
            if len(values):
                low, high = bootstrap_mean(values, reps, seed=seed) if reps and len(values) > 1 else (None, None)
                rows[name] = reports.metric(float(np.mean(values)), len(values), low, high, note=note)
        rows["melody_agreement_chance"] = reports.metric(CHANCE, note="two independent melodies, uniform over the 12 "
                                                                      "pitch classes")
        return rows


def score(clips: dict[str, np.ndarray], sources: dict[str, np.ndarray], source_of: dict[str, str]
          ) -> MelodyAgreement:
    """Agreement of every clip (pitch classes ``{id: [F]}``) with every distinct source (``{key: [F]}``);
    ``source_of[id]`` is the key of the clip's own source."""
    keys = sorted(sources)
    ids, paired, shuffled, voiced, silent = [], [], [], [], []
    for clip_id in sorted(clips):
        counts = np.array([agreement_counts(clips[clip_id], sources[k]) for k in keys], np.int64)  # [S, 2]
        own = keys.index(source_of[clip_id])
        if counts[own, 1] == 0:
            silent.append(clip_id)
            continue
        others = [s for s in range(len(keys)) if s != own and counts[s, 1] > 0]
        ids.append(clip_id)
        paired.append(counts[own, 0] / counts[own, 1])
        shuffled.append(float(np.mean(counts[others, 0] / counts[others, 1])) if others else np.nan)
        voiced.append(int(counts[own, 1]))
    return MelodyAgreement(tuple(ids), np.array(paired, np.float64), np.array(shuffled, np.float64),
                           np.array(voiced, np.int64), len(keys), tuple(silent))


# ---------------------------------------------------------------------------------------------------------------------
# Pairing each clip with its melody source


@dataclass
class Pair:
    """A generated clip and its melody source (``source`` found, with the ``sha256`` the sidecar records, ``located``
    at the recorded path or under ``--sources``), or the ``reason`` it has none."""

    id: str
    clip: Path
    prompt: str | None = None
    source: Path | None = None
    sha256: str | None = None
    located: str | None = None
    reason: str | None = None
    message: str = ""

    def left_out(self, reason: str, message: str) -> None:
        self.reason, self.message = reason, message

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "clip": str(self.clip), "source": str(self.source) if self.source else None,
                "sha256": self.sha256, "located": self.located, "reason": self.reason, "message": self.message}


def _melody_entry(pair: Pair) -> dict[str, Any] | None:
    """The sidecar's ``melody`` entry (``path``, ``sha256``); None with ``pair``'s reason set when there is none."""
    sidecar = sidecar_path(pair.clip)
    try:
        data = read_sidecar(pair.clip)
    except (OSError, ValueError) as err:
        pair.left_out("bad_sidecar", f"{sidecar} is not a readable JSON object ({err})")
        return None
    if data is None:
        pair.left_out("no_sidecar", f"{sidecar} does not exist: no record of a melody source")
        return None
    entry = data.get("melody")
    pair.prompt = data.get("prompt") if isinstance(data.get("prompt"), str) else None
    if entry is None:
        pair.left_out("no_melody", f"{sidecar} names no melody source (sampled without --melody)")
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("path"), str) and isinstance(entry.get("sha256"), str)):
        pair.left_out("bad_sidecar", f"{sidecar}: 'melody' needs a 'path' and a 'sha256'")
        return None
    return entry


class SourceIndex:
    """Files of ``--sources`` (listed at once, so a wrong ``--sources`` fails before any work) by SHA-256, hashed only
    when some recorded path fails; every hash memoised."""

    def __init__(self, spec: str | None) -> None:
        self.spec = spec
        self.files = source_files(spec) if spec is not None else []
        self.hashes: dict[Path, str | None] = {}
        self._by_hash: dict[str, Path] | None = None

    def sha256(self, path: Path) -> str | None:
        if path not in self.hashes:
            try:
                self.hashes[path] = file_hash(path, "sha256") if path.is_file() else None
            except OSError:
                self.hashes[path] = None
        return self.hashes[path]

    def find(self, digest: str) -> Path | None:
        """The first file of ``--sources`` whose content has SHA-256 ``digest``."""
        if self._by_hash is None:
            self._by_hash = {}
            for path in progress_bar(self.files, desc="melody: hashing --sources", unit="file", leave=False,
                                     disable=not self.files):
                found = self.sha256(path)
                if found is not None:
                    self._by_hash.setdefault(found, path)
        return self._by_hash.get(digest)


def source_files(spec: str) -> list[Path]:
    """``--sources``: a JSON-lines manifest's ``path`` column (relative to its folder), else audio files as
    :func:`n2m.eval.audio_sets.list_audio` finds them."""
    path = Path(spec)
    if not (path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES):
        return list_audio(spec)
    files = []
    for line, row in enumerate(read_rows(path), 1):
        if not isinstance(row.get("path"), str) or not row["path"]:
            raise UserError(f"{path}: row {line} has no 'path'")
        files.append(Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"])
    return files


def pair_sources(generated: list[Path], sources: str | None) -> list[Pair]:
    """One :class:`Pair` per generated clip, its source verified by content hash."""
    index = SourceIndex(sources)
    pairs = []
    for clip in generated:
        pair = Pair(clip.stem, clip)
        pairs.append(pair)
        entry = _melody_entry(pair)
        if entry is None:
            continue
        recorded = Path(entry["path"]) if Path(entry["path"]).is_absolute() else clip.parent / entry["path"]
        digest = entry["sha256"]
        pair.sha256 = digest
        if index.sha256(recorded) == digest:
            pair.source, pair.located = recorded, "recorded path"
        elif (moved := index.find(digest)) is not None:
            pair.source, pair.located = moved, "--sources"
        elif recorded.is_file():
            pair.left_out("source_changed", f"{recorded} no longer has the content the clip was sampled with "
                                            f"(sha256 {digest[:12]}…)" + _nowhere(sources))
        else:
            pair.left_out("source_missing", f"{recorded} does not exist" + _nowhere(sources))
    return pairs


def _nowhere(sources: str | None) -> str:
    return f", nor does any file under --sources {sources}" if sources else "; give --sources where it is now"


# ---------------------------------------------------------------------------------------------------------------------
# The job


def _frames(pairs: list[Pair], frames: MelodyFrames) -> tuple[EmbeddedSet, EmbeddedSet, dict[str, Path]]:
    """Melody frames of the paired clips and of their distinct sources (``{sha256: path}``, one file per content); a
    clip whose audio or source's audio fails to decode is left out with that reason."""
    found = [p for p in pairs if p.reason is None]
    distinct = {p.sha256: p.source for p in reversed(found)}  # the first file found for each content
    gen = embed_files([p.clip for p in found], frames, Preprocess(), None, desc="melody: generated")
    src = embed_files(sorted(distinct.values()), frames, Preprocess(), None, desc="melody: sources")
    failed = {f.path: f for f in gen.failures + src.failures}
    for pair in found:
        for side, path in (("", pair.clip), ("source_", distinct[pair.sha256])):
            if pair.reason is None and str(path) in failed:
                pair.left_out(side + failed[str(path)].reason, failed[str(path)].message)
    return gen, src, distinct


def _section(pairs: list[Pair], result: MelodyAgreement, frame_rate: float) -> dict[str, Any]:
    by_id = {p.id: p for p in pairs}
    per_item = {i: {"paired": float(p), "shuffled": None if np.isnan(s) else float(s), "voiced_frames": int(v),
                    "source": str(by_id[i].source), "located": by_id[i].located}
                for i, p, s, v in zip(result.ids, result.paired, result.shuffled, result.voiced)}
    return {"frame_rate": frame_rate, "chance": CHANCE, "clips": len(pairs), "scored": len(result.ids),
            "distinct_sources": result.sources, "per_item": per_item,
            "unpaired": [p.as_dict() for p in pairs if p.reason is not None]}


def _warnings(pairs: list[Pair], result: MelodyAgreement) -> list[str]:
    out = []
    left = Counter(p.reason for p in pairs if p.reason is not None)
    if left:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(left.items()))
        out.append(f"{sum(left.values())} of {len(pairs)} generated clips left out ({reasons}); see melody.unpaired "
                   "in report.json")
    if result.sources < 2:
        out.append("every scored clip follows the same melody source: no shuffled baseline (sample with two or more "
                   "--melody files)")
    elif result.sources < len(result.ids):
        out.append(f"{len(result.ids)} clips share {result.sources} melody sources: clips of one source are not "
                   "independent, so the intervals over clips are too narrow")
    return out


def _none_paired(pairs: list[Pair]) -> NoReturn:
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(Counter(p.reason for p in pairs).items()))
    raise UserError(f"no generated clip could be paired with its melody source ({reasons}); e.g. "
                    f"{next(p.message for p in pairs if p.reason)}")


@dataclass(frozen=True, kw_only=True)
class MelodySettings(OutputSettings):
    """``n2m eval melody``: the ``generated`` clips of ``n2m sample --melody`` (directories, globs or ``.txt``
    lists), where moved melody ``sources`` are now, the melody ``frame_rate`` (frames per second) and ``bootstrap``
    resamples of the clips for the intervals."""

    generated: list[str]
    sources: str | None = None
    frame_rate: float = FRAME_RATE
    bootstrap: int = 1000


@honours_quiet
def run_melody(settings: MelodySettings) -> int:
    """Pair each clip with its melody source, score their agreement against shuffled pairs; the report."""
    generated = list_audio(settings.generated)
    by_id(generated)
    if not generated:
        raise UserError("no generated audio files found")
    out = out_dir(settings, "melody")
    pairs = pair_sources(generated, settings.sources)
    if all(p.reason for p in pairs):
        _none_paired(pairs)
    frames = MelodyFrames(settings.frame_rate)
    gen, src, distinct = _frames(pairs, frames)
    by_path = {path: pitch_classes(f) for path, f in zip(src.paths, src.frames)}
    clip_frames = {i: pitch_classes(f) for i, f in zip(gen.ids, gen.frames)}
    source_of = {p.id: p.sha256 for p in pairs if p.reason is None}
    sources = {h: by_path[str(distinct[h])] for h in set(source_of.values())}
    result = score({i: clip_frames[i] for i in source_of}, sources, source_of)
    for pair in pairs:
        if pair.id in result.silent:
            pair.left_out("no_voiced_overlap", f"{pair.clip} and {pair.source} have no voiced frame in common")
    if not result.ids:
        _none_paired(pairs)
    report = reports.base_report("melody", out.name, resolved(settings))
    report.update(models={"melody": model_info(frames)}, preprocess=Preprocess().as_dict(), warnings=[],
                  lineage=reports.lineage(generated), melody=_section(pairs, result, settings.frame_rate),
                  sets={"generated (melody)": gen.summary(), "melody sources": src.summary()},
                  counts={"generated clips": len(pairs), "scored": len(result.ids),
                          "distinct melody sources": result.sources,
                          **Counter(f"left out: {p.reason}" for p in pairs if p.reason is not None)})
    report["missing"] = {f"clips left out ({reason})": [f"{p.id}: {p.message}" for p in pairs if p.reason == reason]
                         for reason in sorted({p.reason for p in pairs if p.reason is not None})}
    report["metrics"].update(result.rows(settings.bootstrap, settings.seed))
    report["warnings"] += _warnings(pairs, result)
    scored = set(result.ids)
    reports.attach_samples(report, [{"id": p.id, "prompt": p.prompt, "generated": str(p.clip),
                                     "reference": str(p.source)} for p in pairs if p.id in scored],
                           settings.samples, settings.seed)
    return finish(report, out)

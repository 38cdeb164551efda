"""The ``n2m synth`` job as a function of its typed settings (:class:`SynthSettings`; the command line is
:mod:`n2m.synth.cli`): write the synthetic music corpus, its manifest and ``synth.json``.

From Python::

    from n2m.synth.job import SynthSettings, run_synth
    run_synth(SynthSettings(out=Path("corpus"), tracks=8, min_seconds=20, max_seconds=30, quiet=True))
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from n2m.config import require, resolved
from n2m.errors import UserError
from n2m.progress import honours_quiet
from n2m.provenance import now_iso, versions
from n2m.storage import write_json
from n2m.synth.corpus import FORMATS, CorpusConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class SynthSettings:
    """What ``n2m synth`` writes: one field per option (``n2m synth --help`` says what each means), checked here."""

    out: Path | None = None
    tracks: int = 24
    seed: int = 0
    min_seconds: float = 35.0
    max_seconds: float = 150.0
    holdout: float = 0.0
    formats: str = ",".join(FORMATS)
    workers: int = 1
    dry_run: bool = False
    quiet: bool = False

    def __post_init__(self) -> None:
        require(self, "out")
        if self.tracks < 1:
            raise UserError(f"--tracks must be at least 1, got {self.tracks}")
        if not 1.0 <= self.min_seconds <= self.max_seconds <= 3600.0:
            raise UserError(
                f"need 1 <= --min-seconds <= --max-seconds <= 3600, got {self.min_seconds:g} and {self.max_seconds:g}"
            )
        if not 0.0 <= self.holdout < 1.0:
            raise UserError(f"--holdout must be a fraction in [0, 1), got {self.holdout:g}")
        if self.workers < 0:
            raise UserError(f"--workers must be 0 (all cores) or more, got {self.workers}")
        unknown = [f for f in self.format_list if f not in FORMATS]
        if not self.format_list or unknown:
            raise UserError(f"--formats takes a list from {','.join(FORMATS)}, got {self.formats!r}")

    @property
    def format_list(self) -> tuple[str, ...]:
        return tuple(f.strip().lower() for f in str(self.formats).split(",") if f.strip())

    @property
    def corpus(self) -> CorpusConfig:
        return CorpusConfig(self.seed, float(self.min_seconds), float(self.max_seconds), float(self.holdout),
                            self.format_list)


@honours_quiet
def run_synth(settings: SynthSettings) -> int:
    """Write the corpus (or, with ``dry_run``, print the planned tracks); print a summary."""
    from n2m.synth import corpus

    config = settings.corpus
    out = Path(settings.out)
    workers = (os.cpu_count() or 1) if settings.workers == 0 else settings.workers
    if settings.dry_run:
        plan = [asdict(corpus.choose_spec(config, i)) | {"track_id": corpus.track_id(config, i)}
                for i in range(settings.tracks)]
        print(json.dumps({"config": resolved(settings), "tracks": plan}, indent=2, default=str))
        return 0
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    summary = corpus.generate(config, out, settings.tracks, workers=workers, progress=not settings.quiet)
    write_json(str(out / "synth.json"), {
        "config": resolved(settings),
        "sample_rate": corpus.SAMPLE_RATE,
        "summary": summary,
        "versions": versions(),
        "created": now_iso(),
        "manifest": corpus.MANIFEST,
    })
    formats = ", ".join(f"{n} {fmt}" for fmt, n in summary["formats"].items())
    print(
        f"synth: {summary['tracks']} tracks, {summary['audio_hours']:.2f} h of audio ({formats}), "
        f"{summary['holdout']} held out -> {out / corpus.MANIFEST}\n"
        f"synth: {summary['wall_s']:.1f} s wall on {workers} worker(s), {summary['x_realtime']:.0f}x real time "
        f"(synthesis {summary['synth_s']:.1f} s, encoding {summary['encode_s']:.1f} s)"
    )
    log.info("styles: %s", summary["styles"])
    return 0

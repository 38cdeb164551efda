"""``n2m synth``: write the synthetic music corpus (the embedded default data set) and its manifest."""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

from n2m.config import NONNEGATIVE_INT, leaf, resolved
from n2m.errors import UserError
from n2m.provenance import now_iso, versions
from n2m.storage import write_json

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from n2m.synth.corpus import FORMATS
    from n2m.synth.dsp import SAMPLE_RATE

    parser.description = (
        "Compose and render a corpus of synthetic music (drums, bass, chords and a melody; 7 styles, 6 lead timbres, "
        f"60-180 BPM, major and minor keys) as mono {SAMPLE_RATE} Hz files in a mix of formats, with DIR/manifest.jsonl "
        "holding each track's caption, tags and ground truth (bpm, key, mode, instruments, style, mood). "
        "The same --seed gives byte-identical files; track i does not depend on --tracks or --workers."
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="(required) output folder, created if missing")
    parser.add_argument("--tracks", type=int, default=24, metavar="N", help="number of tracks (default 24)")
    parser.add_argument("--seed", type=NONNEGATIVE_INT, default=0, metavar="S", help="corpus seed (default 0)")
    parser.add_argument("--min-seconds", type=float, default=35.0, metavar="SEC",
                        help="shortest track duration in seconds (default 35)")
    parser.add_argument("--max-seconds", type=float, default=150.0, metavar="SEC",
                        help="longest track duration in seconds (default 150); lower both for quick demos and tests")
    parser.add_argument("--holdout", type=float, default=0.0, metavar="FRACTION",
                        help="fraction of tracks marked \"holdout\": true in the manifest, evenly spread and the same "
                             "for every --tracks (kept apart for label evaluation and FAD; default 0)")
    parser.add_argument("--formats", default=",".join(FORMATS), metavar="LIST",
                        help=f"comma-separated formats assigned to tracks in turn (default {','.join(FORMATS)})")
    parser.add_argument("--workers", type=int, default=1, metavar="W",
                        help="worker processes (default 1; 0 = one per CPU core)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and the planned tracks, "
                        "write nothing")
    leaf(parser, run)


def _config(args: argparse.Namespace):
    from n2m.synth.corpus import FORMATS, CorpusConfig

    if not args.out:
        raise UserError("missing --out (give it on the command line or in --config)")
    if args.tracks < 1:
        raise UserError(f"--tracks must be at least 1, got {args.tracks}")
    if not 1.0 <= args.min_seconds <= args.max_seconds <= 3600.0:
        raise UserError(
            f"need 1 <= --min-seconds <= --max-seconds <= 3600, got {args.min_seconds:g} and {args.max_seconds:g}"
        )
    if not 0.0 <= args.holdout < 1.0:
        raise UserError(f"--holdout must be a fraction in [0, 1), got {args.holdout:g}")
    if args.workers < 0:
        raise UserError(f"--workers must be 0 (all cores) or more, got {args.workers}")
    formats = tuple(f.strip().lower() for f in str(args.formats).split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if not formats or unknown:
        raise UserError(f"--formats takes a list from {','.join(FORMATS)}, got {args.formats!r}")
    return CorpusConfig(args.seed, float(args.min_seconds), float(args.max_seconds), float(args.holdout), formats)


def run(args: argparse.Namespace) -> int:
    from n2m.synth import corpus

    config = _config(args)
    out = Path(args.out)
    workers = (os.cpu_count() or 1) if args.workers == 0 else args.workers
    if args.dry_run:
        plan = [asdict(corpus.choose_spec(config, i)) | {"track_id": corpus.track_id(config, i)} for i in range(args.tracks)]
        print(json.dumps({"config": resolved(args), "tracks": plan}, indent=2, default=str))
        return 0
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    summary = corpus.generate(config, out, args.tracks, workers=workers, progress=True)
    write_json(str(out / "synth.json"), {
        "config": resolved(args),
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

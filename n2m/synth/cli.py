"""``n2m synth``'s command line: the options, parsed into :class:`n2m.synth.job.SynthSettings` for the job
:func:`n2m.synth.job.run_synth` (the synthetic music corpus, the embedded default data set, and its manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from n2m.config import NONNEGATIVE_INT, job, leaf


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
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    leaf(parser, job("n2m.synth.job:run_synth"))

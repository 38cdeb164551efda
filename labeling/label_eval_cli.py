"""``n2m label-eval``'s command line: the options, parsed into :class:`n2m.labeling.label_eval.LabelEvalSettings` for the
job :func:`n2m.labeling.label_eval.run_label_eval` (how right a label set is, against a manifest's ground truth)."""

from __future__ import annotations

import argparse

from n2m.cli import old_spellings
from n2m.config import job, leaf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", required=True, metavar="OUT/labels/NAME", help="a label set made by n2m label")
    parser.add_argument("--truth", required=True, metavar="MANIFEST",
                        help="ground truth: manifest with style, instruments, mood, bpm (n2m synth's manifest.jsonl)")
    old_spellings(parser, parser.add_argument("--out", metavar="FILE", help="also write the report here, as JSON"),
                  "--json")
    parser.add_argument("--holdout-only", action="store_true", help="report held-out tracks only")
    parser.add_argument("--tempo-bounds", default="76,100", metavar="SLOW,FAST",
                        help="BPM limits of the tempo classes slow | medium | fast (default 76,100, the synthetic "
                             "corpus's caption words)")
    leaf(parser, job("n2m.labeling.label_eval:run_label_eval"))

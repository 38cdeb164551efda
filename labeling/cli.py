"""``n2m label``'s command line: the options, parsed into :class:`n2m.labeling.label_job.LabelJobSettings` for the job
:func:`n2m.labeling.label_job.run_label`, which is imported when the job runs, not for ``n2m label --help``.
"""

from __future__ import annotations

import argparse

from n2m.beam_cli import add_beam_arguments
from n2m.cli import old_spellings
from n2m.config import NONNEGATIVE, POSITIVE_INT, job, leaf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--build", required=True, metavar="OUT", help="build output folder (n2m build --out)")
    parser.add_argument("--vocab", required=True, action="append", metavar="PARQUET",
                        help="vocabulary file (n2m vocab; VOCAB_SCHEMA); repeat for several. A file holding both "
                             "kinds is scored as two vocabularies. Entries with no text, blank text or an id seen "
                             "before are left out and counted by reason in the summary and manifest.json")
    old_spellings(parser, parser.add_argument(
        "--joint-model", required=True, metavar="DIR",
        help="CLAP model directory (transformers layout: n2m clap convert / n2m clap-train output, or a local "
             "laion/clap-htsat-unfused copy)"), "--model")
    parser.add_argument("--name", required=True,
                        help="label set name: writes OUT/labels/NAME/ (one folder name: no '/', no leading dot)")
    parser.add_argument("--k", type=POSITIVE_INT, default=10, help="top-K entries kept per clip and vocabulary (default 10)")
    parser.add_argument("--k-prime", default="3,6", metavar="LONG,SHORT",
                        help="captions sampled per clip from the top-K, for long- and short-form vocabularies "
                             "(default 3,6 as in Noise2Music)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed; same inputs and seed give the same labels")
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=8, help="10 s audio windows per model forward")
    parser.add_argument("--text-batch", type=POSITIVE_INT, default=64, help="vocabulary entries per text forward")
    parser.add_argument("--device", default="cpu", help="torch device for CLAP and scoring: cpu, cuda, cuda:1")
    parser.add_argument("--splits", default="", help="comma-separated splits to label (default: all)")
    parser.add_argument("--entry-block", type=POSITIVE_INT, default=32_768,
                        help="vocabulary entries scored per block (bounds memory: clips x block floats)")
    parser.add_argument("--min-tail-s", type=NONNEGATIVE, default=None,
                        help="shortest trailing part of a clip that becomes its own 10 s window (default: 5 s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing label set NAME made with other settings or from another build: the "
                             "new set is built beside the old one and swapped in only when it is complete, so a "
                             "failed run leaves the old set as it was")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved settings and shard count, then stop")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_beam_arguments(parser, ", at most one per shard")
    leaf(parser, job("n2m.labeling.label_job:run_label"))

"""``n2m clap``: CLAP model utilities. ``n2m clap convert`` maps an original LAION checkpoint to the transformers layout."""

from __future__ import annotations

import argparse

from labeling.convert import add_convert_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="clap_command", metavar="COMMAND", title="commands")
    convert = sub.add_parser(
        "convert", help="LAION CLAP .pt checkpoint -> transformers ClapModel directory",
        description="Convert an original LAION CLAP checkpoint (HTSAT audio branch + RoBERTa text branch) into a "
                    "transformers ClapModel directory that n2m label, n2m eval and training load. Every checkpoint "
                    "key is mapped or dropped by a documented rule; anything else is an error.")
    add_convert_arguments(convert)

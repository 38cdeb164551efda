"""The Beam jobs' command-line options (``n2m build``, ``n2m label``): the convention of :mod:`n2m.beam`."""

from __future__ import annotations

import argparse

from n2m.beam import DASK_EXTRA


def add_beam_arguments(parser: argparse.ArgumentParser, cap: str = "") -> None:
    """``--runner`` and ``--dask-workers`` in a "running on Beam" group, and every flag ``parser`` does not define
    collected (with anything after ``--``) into ``args.beam_args`` for Beam. ``cap``: the job's worker limit, for help."""
    group = parser.add_argument_group(
        "running on Beam",
        "Flags this job does not define go to Beam unchanged, before or after '--' (--direct_num_workers=2, "
        "--dask_client_address=tcp://HOST:PORT, --project=..., --temp_location=...); a flag neither knows is refused. "
        "Remote workers need n2m installed: docs/scaling.md gives the Dataflow, Flink and Spark command lines.")
    group.add_argument("--runner", default=None, metavar="NAME",
                       help="Beam runner: DirectRunner (default: Beam's FnApiRunner, multi-processing, one worker per "
                            f"core{cap}; never Prism), DaskRunner (needs {DASK_EXTRA}; with "
                            "--dask_client_address, else a local cluster), DataflowRunner, FlinkRunner, SparkRunner, "
                            "PortableRunner or a runner's full class path")
    group.add_argument("--dask-workers", type=int, default=None, metavar="N",
                       help="run on a local Dask cluster of N worker processes that the job starts and stops "
                            "(implies --runner DaskRunner)")
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        namespace, extras = parse_known(args, namespace)
        collected = list(getattr(namespace, "beam_args", None) or []) + [a for a in extras if a != "--"]
        namespace.beam_args = collected
        return namespace, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]
    parser.set_defaults(beam_args=[])

"""Beam options for the labelling job: pass-through flags with DirectRunner defaults that work offline.

Flags after ``--`` go to Beam unchanged (``-- --runner=DataflowRunner --project=...``). With the DirectRunner (the
default) the job runs on Beam's FnApiRunner in ``multi_processing`` mode, never on Prism (which downloads a binary);
each worker process loads the CLAP model once and gets ``cores / workers`` torch threads.
"""

from __future__ import annotations

import argparse
import os

DIRECT_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})


def add_beam_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("beam_args", nargs=argparse.REMAINDER, metavar="-- BEAM_OPTIONS",
                        help="Beam pipeline options after '--' (e.g. -- --direct_num_workers=2, or "
                             "--runner=DataflowRunner ...). Default: DirectRunner, multi_processing, one worker "
                             "per core (at most one per shard)")


def _given(args: list[str], flag: str) -> bool:
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in args)


def options_for(beam_args: list[str], work_items: int, verbose: bool = False):
    """``(PipelineOptions, is_direct, workers)`` with this job's DirectRunner defaults."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    args = [a for a in beam_args if a != "--"]
    runner = PipelineOptions(args).view_as(StandardOptions).runner or "DirectRunner"
    direct = runner.lower() in DIRECT_RUNNERS
    if direct:
        if not _given(args, "direct_running_mode"):
            args.append("--direct_running_mode=multi_processing")
        mode = PipelineOptions(args).view_as(DirectOptions).direct_running_mode
        if mode != "in_memory" and not _given(args, "direct_num_workers"):
            args.append(f"--direct_num_workers={max(1, min(os.cpu_count() or 1, work_items))}")
    if not verbose and not _given(args, "default_sdk_harness_log_level"):
        args.append("--default_sdk_harness_log_level=WARNING")
    options = PipelineOptions(args)
    workers = None
    if direct:
        view = options.view_as(DirectOptions)
        workers = 1 if view.direct_running_mode == "in_memory" else int(view.direct_num_workers or 1)
    return options, direct, workers


def run_beam(build, beam_args: list[str], work_items: int, verbose: bool = False) -> None:
    """Build a pipeline with ``build(pipeline)`` and run it to completion."""
    import apache_beam as beam

    options, direct, _ = options_for(beam_args, work_items, verbose)
    runner = None
    if direct:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        runner = FnApiRunner()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build(pipeline)
    pipeline.run().wait_until_finish()


def threads_per_worker(workers: int | None) -> int:
    """Torch threads for each worker process so that all workers together use the cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers or 1))

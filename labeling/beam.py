"""Beam options for the labelling job: pass-through flags with DirectRunner defaults that work offline.

Flags after ``--`` go to Beam unchanged (``-- --runner=DataflowRunner --project=...``). With the DirectRunner (the
default) the job runs on Beam's FnApiRunner in ``multi_processing`` mode, never on Prism (which downloads a binary);
each worker process loads the CLAP model once and gets ``cores / workers`` torch threads.
"""

from __future__ import annotations

import argparse
import os

from n2m.beam import direct_runner, pipeline_options


def add_beam_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("beam_args", nargs=argparse.REMAINDER, metavar="-- BEAM_OPTIONS",
                        help="Beam pipeline options after '--' (e.g. -- --direct_num_workers=2, or "
                             "--runner=DataflowRunner ...). Default: DirectRunner, multi_processing, one worker "
                             "per core (at most one per shard)")


def options_for(beam_args: list[str], work_items: int, verbose: bool = False):
    """``(PipelineOptions, is_direct, workers)``: n2m's DirectRunner defaults, at most one worker per shard."""
    return pipeline_options(beam_args, verbose, max_workers=work_items)


def run_beam(build, beam_args: list[str], work_items: int, verbose: bool = False) -> None:
    """Build a pipeline with ``build(pipeline)`` and run it to completion."""
    import apache_beam as beam

    options, direct, _ = options_for(beam_args, work_items, verbose)
    pipeline = beam.Pipeline(runner=direct_runner(options) if direct else None, options=options)
    build(pipeline)
    pipeline.run().wait_until_finish()


def threads_per_worker(workers: int | None) -> int:
    """Torch threads for each worker process so that all workers together use the cores once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers or 1))

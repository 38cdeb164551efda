"""Beam for the Beam jobs (``n2m build``, ``n2m label``): a quiet import and the shared pipeline options.

Flags a job does not define pass to Beam unchanged, so the same job runs on Dataflow, Flink or Spark. With the
DirectRunner (the default) a job runs on Beam's FnApiRunner in ``multi_processing`` mode over the cores, never on Prism,
which downloads a binary and so cannot run offline.

Importing this module installs a logging filter that drops what Beam logs, while it is imported, about optional
Google Cloud clients n2m never uses (``WARNING root: apitools not found...``, ``No module named
google.cloud.bigquery_storage_v1...``); import it (or call :func:`import_beam`) before ``apache_beam``.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType
from typing import Any

DIRECT_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})
# Beam's import-time notes on optional dependencies, and the loggers they are sent to
OPTIONAL_DEPENDENCY_NOTES = ("apitools not found", "No module named google.cloud")
_NOTE_LOGGERS = ("", "apache_beam.io.gcp.bigquery")


class _OptionalDependencyNotes(logging.Filter):
    """Drops Beam's notes about optional GCP clients (records logged from Beam's own files)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_beam = f"{os.sep}apache_beam{os.sep}" in record.pathname
        return not (from_beam and any(note in record.getMessage() for note in OPTIONAL_DEPENDENCY_NOTES))


def silence_optional_dependency_notes() -> None:
    """Install the filter on the loggers Beam's import notes go to (once per process)."""
    for name in _NOTE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OptionalDependencyNotes) for f in logger.filters):
            logger.addFilter(_OptionalDependencyNotes())


def import_beam() -> ModuleType:
    """``apache_beam``, imported with its optional-dependency notes silenced."""
    silence_optional_dependency_notes()
    import apache_beam

    return apache_beam


silence_optional_dependency_notes()


def given(beam_args: list[str], flag: str) -> bool:
    """Whether ``--flag`` or ``--flag=value`` is among the pass-through arguments."""
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in beam_args)


def pipeline_options(beam_args: list[str], verbose: bool = False,
                     max_workers: int | None = None) -> tuple[Any, bool, int | None]:
    """``(PipelineOptions, is_direct, workers)`` from pass-through flags, with n2m's DirectRunner defaults.

    DirectRunner: multi-processing with one worker per core (at most ``max_workers``) unless ``--direct_running_mode``
    / ``--direct_num_workers`` say otherwise; SDK workers log warnings only unless ``verbose``.
    """
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    args = [a for a in beam_args if a != "--"]
    runner = PipelineOptions(args).view_as(StandardOptions).runner or "DirectRunner"
    direct = runner.lower() in DIRECT_RUNNERS
    if direct:
        if not given(args, "direct_running_mode"):
            args.append("--direct_running_mode=multi_processing")
        if not given(args, "direct_num_workers"):
            cores = os.cpu_count() or 1
            args.append(f"--direct_num_workers={max(1, min(cores, max_workers or cores))}")
    if not verbose and not given(args, "default_sdk_harness_log_level"):
        args.append("--default_sdk_harness_log_level=WARNING")
    options = PipelineOptions(args)
    workers = None
    if direct:
        view = options.view_as(DirectOptions)
        workers = 1 if view.direct_running_mode == "in_memory" else int(view.direct_num_workers or 1)
    return options, direct, workers


def direct_runner(options: Any) -> Any:
    """Beam's FnApiRunner with the job's options in its provision info: what SwitchingDirectRunner does once it has
    given up on Prism."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)

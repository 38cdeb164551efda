"""Beam for the Beam jobs (``n2m build``, ``n2m label``): a quiet import, one option convention, and the runners.

The option convention (docs/scaling.md) is the same for both jobs: ``--runner NAME`` (default DirectRunner),
``--dask-workers N`` (a local Dask cluster of N worker processes), and every other flag the job does not define goes to
Beam unchanged, before or after a ``--``; flags neither the job nor Beam knows are refused in one line.

Runners:

- DirectRunner (default): Beam's FnApiRunner in ``multi_processing`` mode with one worker per core, never Prism, which
  downloads a binary and so cannot run offline.
- DaskRunner (``pip install 'n2m[dask]'``): on a ``dask.distributed`` cluster (``--dask_client_address
  tcp://HOST:PORT``), or a local cluster that the job starts and stops (``--dask-workers N``; one per core when neither is given). Beam's
  DaskRunner computes only the graph of the last transform applied and hands every output of a multi-output ParDo to
  each consumer (Beam 2.77), so n2m's pipelines have one sink and only single-output ParDos; :meth:`BeamSession.run`
  refuses a pipeline with more than one sink. A job's work items go into ``PARTITIONS_PER_WORKER`` Dask partitions per
  worker (``--dask_npartitions``): one partition per item balances best but makes each GroupByKey a shuffle of
  items x items tasks, whose scheduling cost more CPU than the imbalance of a few partitions per worker (measured on
  ``n2m build``, benchmarks/build_dask.py).
- Any other runner (Dataflow, Flink, Spark, ...) is used as given; its workers need n2m installed (docs/scaling.md).

Importing this module installs a logging filter that drops what Beam logs, while it is imported, about optional
Google Cloud clients n2m never uses (``WARNING root: apitools not found...``, ``No module named
google.cloud.bigquery_storage_v1...``); import it (or call :func:`import_beam`) before ``apache_beam``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import IO, Any

from n2m.errors import UserError

DIRECT_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})
DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"
RUNNER_ALIASES = {"daskrunner": DASK_RUNNER, "dask": DASK_RUNNER, DASK_RUNNER.lower(): DASK_RUNNER}
DASK_EXTRA = "pip install 'n2m[dask]'"
PARTITIONS_PER_WORKER = 4
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


# ---------------------------------------------------------------------------------------------------------------------
# The option convention (the flags themselves: n2m.beam_cli)


@dataclass(frozen=True, kw_only=True)
class BeamOptions:
    """The Beam settings of a Beam job (the base of its settings dataclass): ``runner`` (default DirectRunner),
    ``dask_workers`` (a local Dask cluster of that many worker processes) and ``beam_args``, Beam's own flags as typed
    (:func:`n2m.beam_cli.add_beam_arguments` collects them from the command line); ``verbose`` keeps Beam's logs."""

    runner: str | None = None
    dask_workers: int | None = None
    beam_args: list[str] = field(default_factory=list)
    verbose: bool = False


def given(beam_args: list[str], flag: str) -> bool:
    """Whether ``--flag`` or ``--flag=value`` is among the pass-through arguments."""
    return any(a == f"--{flag}" or a.startswith(f"--{flag}=") for a in beam_args)


def unknown_beam_flags(beam_args: list[str]) -> list[str]:
    """The flags (as typed) that no Beam PipelineOptions class defines, short options, and stray values."""
    from apache_beam.options.pipeline_options import PipelineOptions

    beam_logger = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_logger.level
    beam_logger.setLevel(logging.ERROR)
    try:
        options = PipelineOptions(beam_args)
        unknown = set(options.get_all_options(retain_unknown_options=True)) - set(options.get_all_options())
    finally:
        beam_logger.setLevel(level)
    flags = [a.split("=", 1)[0] for a in beam_args if a.startswith("--")]
    stray = [a for i, a in enumerate(beam_args)
             if not a.startswith("-") and (i == 0 or not beam_args[i - 1].startswith("--") or "=" in beam_args[i - 1])]
    short = [a for a in beam_args if a.startswith("-") and not a.startswith("--")]  # Beam has no short options
    return [f for f in flags if f.lstrip("-").replace("-", "_") in unknown] + short + stray


def runner_name(name: str | None) -> str:
    """A ``--runner`` value as Beam takes it (``DaskRunner`` -> its class path); ``None`` -> ``DirectRunner``."""
    if not name:
        return "DirectRunner"
    return RUNNER_ALIASES.get(name.lower(), name)


def dask_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("dask", "distributed"))


@dataclass(frozen=True)
class BeamSetup:
    """Resolved Beam options of a job.

    ``kind``: ``direct``, ``dask`` or ``remote``; ``workers``: local worker processes (DirectRunner workers or the
    local Dask cluster's; ``None`` when a remote service decides); ``dask_workers``: size of the local Dask cluster the
    job starts (``None``: use ``--dask_client_address``); ``env``: variables set for local workers.
    """

    args: list[str]
    runner: str
    kind: str
    workers: int | None
    dask_workers: int | None = None
    verbose: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def direct(self) -> bool:
        return self.kind == "direct"

    @property
    def local(self) -> bool:
        """Whether the workers run on this machine as processes this job starts."""
        return self.direct or self.dask_workers is not None

    def describe(self) -> str:
        if self.kind == "dask":
            where = f"a local Dask cluster of {self.dask_workers}" if self.dask_workers else "the Dask cluster at " \
                f"{_flag_value(self.args, 'dask_client_address')}"
            return f"DaskRunner on {where}" + (" worker(s)" if self.dask_workers else "")
        if self.direct:
            return f"DirectRunner, {self.workers} worker(s)"
        return self.runner


def _flag_value(beam_args: list[str], flag: str) -> str | None:
    for i, a in enumerate(beam_args):
        if a.startswith(f"--{flag}="):
            return a.split("=", 1)[1]
        if a == f"--{flag}" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return None


def beam_setup(args: BeamOptions, max_workers: int | None = None,
               env: dict[str, str] | None = None) -> BeamSetup:
    """Check ``args.runner``, ``args.dask_workers`` and ``args.beam_args`` (one-line :class:`UserError` for a mistake)
    and add n2m's defaults: DirectRunner in multi-processing mode with one worker per core (at most ``max_workers``),
    a local Dask cluster of as many workers when DaskRunner has no ``--dask_client_address`` (partitions are chosen
    per run: :meth:`BeamSession.run`), and SDK workers that log warnings only unless ``--verbose``."""
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

    beam_args = [a for a in args.beam_args if a != "--"]
    verbose = bool(getattr(args, "verbose", False))
    passed = _flag_value(beam_args, "runner")
    if passed and args.runner and runner_name(passed) != runner_name(args.runner):
        raise UserError(f"--runner given twice ({args.runner} and {passed})")
    dask_workers = args.dask_workers
    runner = runner_name(args.runner or passed or ("DaskRunner" if dask_workers is not None else None))
    beam_args = [a for a in beam_args if not a.startswith("--runner=")]
    if "--runner" in beam_args:
        del beam_args[beam_args.index("--runner"):beam_args.index("--runner") + 2]
    dask = runner == DASK_RUNNER
    if dask_workers is not None and (not dask or dask_workers < 1):
        raise UserError("--dask-workers must be >= 1 and goes with --runner DaskRunner")
    if dask or any(a.startswith("--dask_") for a in beam_args):
        if not dask_installed():
            raise UserError(f"the DaskRunner needs Dask, which is not installed: {DASK_EXTRA}")
        importlib.import_module("apache_beam.runners.dask.dask_runner")  # registers the --dask_* options
    unknown = unknown_beam_flags(beam_args)
    if unknown:
        raise UserError(f"unknown option(s) for this job or Beam: {', '.join(unknown)}")
    cores = max(1, min(os.cpu_count() or 1, max_workers or os.cpu_count() or 1))
    args_out = [*beam_args, f"--runner={runner}"]
    if dask:
        if given(beam_args, "dask_client_address"):
            if dask_workers is not None:
                raise UserError("--dask-workers starts a local cluster; it excludes --dask_client_address")
        elif dask_workers is None:
            dask_workers = cores
    direct = runner.lower() in DIRECT_RUNNERS
    if direct:
        if not given(beam_args, "direct_running_mode"):
            args_out.append("--direct_running_mode=multi_processing")
        in_memory = _flag_value(beam_args, "direct_running_mode") == "in_memory"
        if not given(beam_args, "direct_num_workers") and not in_memory:
            args_out.append(f"--direct_num_workers={cores}")
    if not verbose and not given(beam_args, "default_sdk_harness_log_level"):
        args_out.append("--default_sdk_harness_log_level=WARNING")
    known = {path.rsplit(".", 1)[-1].lower() for path in StandardOptions.ALL_KNOWN_RUNNERS}
    if "." not in runner and runner.lower() not in known and f"{runner.lower()}runner" not in known:
        raise UserError(f"--runner {runner}: not a Beam runner (DirectRunner, DaskRunner, DataflowRunner, FlinkRunner, "
                        "SparkRunner, PortableRunner or a runner's full class path)")
    workers = dask_workers
    if direct:
        view = PipelineOptions(args_out).view_as(DirectOptions)
        workers = 1 if view.direct_running_mode == "in_memory" else int(view.direct_num_workers or 1)
    kind = "direct" if direct else ("dask" if dask else "remote")
    return BeamSetup(args_out, runner, kind, workers, dask_workers, verbose, dict(env or {}))


# ---------------------------------------------------------------------------------------------------------------------
# Running


def direct_runner(options: Any) -> Any:
    """Beam's FnApiRunner with the job's options in its provision info: what SwitchingDirectRunner does once it has
    given up on Prism."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options(drop_default=True))
    provision = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=provision)


def sinks(pipeline: Any) -> list[str]:
    """Labels of the leaf transforms whose outputs no transform reads (as main or side input)."""
    from apache_beam.pipeline import PipelineVisitor

    class Leaves(PipelineVisitor):
        def __init__(self) -> None:
            self.read: set[Any] = set()
            self.leaves: list[tuple[str, list[Any]]] = []

        def visit_transform(self, node) -> None:
            self.read.update(node.inputs)
            self.read.update(s.pvalue for s in node.side_inputs)
            self.leaves.append((node.full_label, list(node.outputs.values())))

    visitor = Leaves()
    pipeline.visit(visitor)
    return [label for label, outputs in visitor.leaves if not outputs or not any(o in visitor.read for o in outputs)]


class BeamSession:
    """Context manager around the runs of one job: starts (and stops) the local Dask cluster when the job has one, sets
    ``env`` for local workers, and runs pipelines with :meth:`run`. ``workers`` is the number of worker processes
    (threads on a remote Dask cluster, asked of its scheduler) or ``None`` when a remote service decides."""

    def __init__(self, setup: BeamSetup):
        self.setup = setup
        self.args = list(setup.args)
        self.workers = setup.workers
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> BeamSession:
        stack = self._stack.__enter__()
        if self.setup.local:
            stack.enter_context(_environment(self.setup.env))
        if self.setup.kind == "dask":
            if self.setup.dask_workers is not None:
                address = stack.enter_context(local_dask_cluster(self.setup.dask_workers, self.setup.verbose))
                self.args.append(f"--dask_client_address={address}")
            else:
                timeout = float(_flag_value(self.args, "dask_connection_timeout") or 30)
                self.workers = _dask_threads(_flag_value(self.args, "dask_client_address") or "", timeout)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.__exit__(*exc)

    def run(self, build: Callable[[Any], None], items: int = 1) -> None:
        """Add transforms with ``build(pipeline)``, run the pipeline to completion; raise if it did not finish.
        ``items``: the number of work items the pipeline starts from (sets the Dask partitions unless given)."""
        beam = import_beam()
        from apache_beam.options.pipeline_options import PipelineOptions

        args = list(self.args)
        if self.setup.kind == "dask" and not any(given(args, f) for f in ("dask_npartitions", "dask_partition_size")):
            args.append(f"--dask_npartitions={max(1, min(items, PARTITIONS_PER_WORKER * (self.workers or 1)))}")
        options = PipelineOptions(args)
        pipeline = beam.Pipeline(runner=direct_runner(options) if self.setup.direct else None, options=options)
        build(pipeline)
        ends = sinks(pipeline)
        if len(ends) != 1:  # the DaskRunner would compute only the last one
            raise RuntimeError(f"a pipeline must end in one sink, not {len(ends)}: {', '.join(ends)}")
        result = pipeline.run()
        try:
            state = result.wait_until_finish()
        finally:
            client = getattr(result, "client", None)  # the DaskRunner's; closed before its cluster stops
            if client is not None:
                client.close()
        if str(state).rsplit(".", 1)[-1] != "DONE":
            raise RuntimeError(f"the {self.setup.runner} run ended in state {state}")


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` (those not set already: an explicit setting wins) while local workers start."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def local_dask_cluster(workers: int, verbose: bool) -> Iterator[str]:
    """A ``distributed.LocalCluster`` of ``workers`` single-threaded processes on 127.0.0.1 (no dashboard); yields
    the scheduler address. Workers import :mod:`n2m.beam` first, so Beam's import notes are dropped there too; the
    cluster's own logging stays at ERROR unless ``verbose``."""
    from distributed import LocalCluster

    level = logging.INFO if verbose else logging.ERROR
    logger = logging.getLogger("distributed")
    previous = logger.level
    logger.setLevel(level)
    # worker processes read it when they import distributed (after Beam, whose root handler their logs propagate to)
    quiet = {"DASK_LOGGING__DISTRIBUTED": logging.getLevelName(level).lower()}
    try:
        with _environment(quiet), LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None, silence_logs=level,
                                               preload=["n2m.beam"]) as cluster:
            yield cluster.scheduler_address
    finally:
        logger.setLevel(previous)


def _dask_threads(address: str, timeout_s: float) -> int:
    """Total worker threads of the Dask cluster at ``address`` (one-line error when it cannot be reached)."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout_s) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
    except (OSError, TimeoutError) as err:
        raise UserError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    if not workers:
        raise UserError(f"the Dask cluster at {address} has no workers")
    return sum(int(w.get("nthreads", 1)) for w in workers)


@contextlib.contextmanager
def worker_output_to(log_path: str | None) -> Iterator[IO[str]]:
    """Send what Beam's worker processes print (they inherit file descriptor 2) to ``log_path``.

    Yields a stream on the real stderr for the progress bar. ``None`` leaves stderr alone (``--verbose``).
    """
    if log_path is None:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log_path, "ab") as log, os.fdopen(os.dup(saved), "w") as console:
        os.dup2(log.fileno(), 2)
        try:
            yield console
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)

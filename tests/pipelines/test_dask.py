"""``n2m build`` on Beam's DaskRunner over a real 2-worker ``distributed.LocalCluster``: the runner's defects kept as a
minimal reproduction, byte-identical outputs to the DirectRunner's (bad sources included), a worker killed mid-build,
the guards against silent loss, and the one Beam option convention."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("distributed", reason="the Dask tests need the dask extra: pip install 'n2m[dask]'")

import apache_beam as beam  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from build_helpers import BUILD_FLAGS, build, music, shard_bytes  # noqa: E402
from distributed import Client  # noqa: E402

from n2m import audio  # noqa: E402
from n2m.beam import DASK_RUNNER, BeamSession, beam_setup, local_dask_cluster  # noqa: E402
from n2m.cli import build_parser  # noqa: E402
from n2m.layout import BuildLayout  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster() -> str:
    """A 2-worker LocalCluster (separate processes) for the module; yields its scheduler address."""
    with local_dask_cluster(2, verbose=False) as address:
        yield address


def _on(cluster: str) -> list[str]:
    return ["--runner", "DaskRunner", f"--dask_client_address={cluster}"]


def _run_raw(cluster: str, shape) -> dict[str, list]:
    """Run ``shape(pipeline, sink)`` on Beam's DaskRunner as Beam ships it; returns what each sink label received."""
    from apache_beam.options.pipeline_options import PipelineOptions

    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"n2m-dask-repro-{os.getpid()}-{time.monotonic_ns()}"
    folder.mkdir(parents=True)

    def sink(label: str):
        def write(x):
            with open(folder / label, "a") as handle:
                handle.write(json.dumps(x) + "\n")

        return label >> beam.Map(write)

    pipeline = beam.Pipeline(options=PipelineOptions([f"--runner={DASK_RUNNER}", f"--dask_client_address={cluster}",
                                                      "--dask_partition_size=1"]))
    shape(pipeline, sink)
    result = pipeline.run()
    result.wait_until_finish()
    result.client.close()
    return {p.name: sorted(json.loads(line) for line in p.read_text().splitlines()) for p in folder.iterdir()}


class _EvenOdd(beam.DoFn):
    def process(self, x):
        yield x if x % 2 == 0 else beam.pvalue.TaggedOutput("odd", x)


def test_minimal_reproduction_of_the_dask_runner_defects(cluster):
    """Beam 2.77's DaskRunner, as shipped (what n2m's pipelines are shaped around; see n2m.beam). If this test fails,
    Beam changed: revisit the one-sink rule and the side-input-free label job."""
    # 1. only the graph of the last transform applied is computed: an earlier sink (behind a GroupByKey here) is never
    #    run, and the job still reports DONE
    def two_sinks(p, sink):
        numbers = p | beam.Create(list(range(6)))
        _ = numbers | beam.Map(lambda x: (x % 2, x)) | beam.GroupByKey() | beam.MapTuple(lambda k, v: [k, sorted(v)]) \
            | sink("grouped")
        _ = numbers | "Other" >> beam.Map(lambda x: x) | sink("other")

    assert _run_raw(cluster, two_sinks) == {"other": list(range(6))}

    # 2. every consumer of a multi-output ParDo gets all of its outputs: the "odd" branch sees the even numbers too
    def tagged(p, sink):
        split = p | beam.Create(list(range(6))) | beam.ParDo(_EvenOdd()).with_outputs("odd", main="even")
        _ = split.odd | sink("odd")

    assert _run_raw(cluster, tagged) == {"odd": list(range(6))}

    # 3. a side input is recomputed inside the task that reads it, and there a count over 4 elements came out as 8
    def side_input(p, sink):
        items = p | beam.Create(list(range(4))) | beam.Reshuffle() | beam.Map(lambda x: {"v": x})
        counted = items | beam.Map(lambda r: ("n", 1)) | beam.CombinePerKey(sum)
        _ = items | beam.Map(lambda r, n: n["n"], beam.pvalue.AsDict(counted)) | sink("seen")

    assert _run_raw(cluster, side_input) == {"seen": [8] * 4}


def test_a_pipeline_with_two_sinks_is_refused_before_it_runs():
    args = build_parser({"build": ("", "n2m.pipelines.cli")}).parse_args(
        ["build", "--input", "x", "--output", "y", "--", "--direct_running_mode=in_memory"])
    with BeamSession(beam_setup(args)) as session, pytest.raises(RuntimeError, match="one sink, not 2"):
        session.run(lambda p: [p | label >> beam.Create([1]) for label in ("A", "B")])


def _tables(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("index.parquet", "sources.parquet")}


def test_dask_build_is_byte_identical_to_the_direct_runner(corpus, built, cluster, tmp_path):
    out = tmp_path / "dask"
    assert build(corpus.manifest, out, *_on(cluster)) == 0
    assert shard_bytes(out) == shard_bytes(built) and shard_bytes(out)
    assert _tables(out) == _tables(built)  # bad sources: same statuses, reasons and messages
    statuses = {r["source_uri"]: (r["status"], r["reason"]) for r in pq.read_table(out / "sources.parquet").to_pylist()}
    assert {uri: statuses[uri] for uri in corpus.expected} == corpus.expected
    run = json.loads((out / "build.json").read_text())["run"]
    assert run["runner"] == DASK_RUNNER and run["workers"] == 2 and not (out / "_work").exists()


def _sources(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        audio.write(src / f"{i:02d}.flac", music(4.0, 44100, 2, seed=300 + i), 44100)
    return src


def test_a_worker_killed_mid_build_then_rerun_gives_the_uninterrupted_bytes(cluster, tmp_path):
    src = _sources(tmp_path, 8)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert build(src, reference, "--sources-per-shard", "1", "--direct_running_mode=in_memory") == 0
    stage = out / "_work" / "stage"
    codes: list[int] = []
    job = threading.Thread(target=lambda: codes.append(build(src, out, "--sources-per-shard", "1", *_on(cluster))))
    with Client(cluster) as client:
        pids = client.run(os.getpid)
        job.start()
        deadline = time.time() + 120
        while not (stage.exists() and any(p.suffix == ".json" for p in stage.iterdir())) and time.time() < deadline:
            time.sleep(0.01)
        committed_at_kill = len(list((out / "shards").rglob("*.json"))) if (out / "shards").exists() else 0
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        job.join(180)
        assert committed_at_kill < 8  # the kill landed while shards were still being built
        client.wait_for_workers(2, timeout=60)
        # the scheduler reran the lost tasks on the other worker (codes == [0]) or gave up on them: either way the
        # same command finishes (or finds nothing left to do) with the bytes of an uninterrupted run
        assert codes in ([0], [1])
        assert build(src, out, "--sources-per-shard", "1", *_on(cluster)) == 0
        if codes == [0]:
            assert json.loads((out / "build.json").read_text())["run"]["shards_processed"] == 0
    assert shard_bytes(out) == shard_bytes(reference) and len(shard_bytes(out)) == 8
    assert (out / "index.parquet").read_bytes() == (reference / "index.parquet").read_bytes()
    assert not list(out.rglob("*.tmp-*")) and not (out / "_work").exists()


def test_commit_refuses_a_shard_whose_sources_missed_the_duplicate_check(tmp_path):
    """The guard against a runner that drops the hash records: the shard is not committed, the job fails."""
    from n2m.pipelines import job, plan
    from n2m.pipelines.clips import ClipSettings
    from n2m.pipelines.fetch import FetchSettings

    src, out = _sources(tmp_path, 2), str(tmp_path / "out")
    clip = ClipSettings(16000, 1, 2.0, 2.0, 1.0, -60.0, 60.0)
    splits = (("train", 1.0),)
    the_plan = plan.plan_build(str(src), out, clip, splits, 2, (".flac",))
    settings = job.JobSettings(out, clip, FetchSettings(1 << 20, 5.0, 0, 0.0, 30.0), plan.settings_hash(clip, splits))
    (shard, size), = the_plan.pending.items()
    chunk = job.chunk_name(shard, 0, size)
    stager = job.StageChunk(settings)
    stager.setup()
    records = list(stager.process(chunk))
    hashes = [payload for tag, payload in records if tag == job.PCM_TAG]
    assert len(hashes) == 2 and (job.SHARD_TAG, (shard, chunk)) in records
    committer = job.CommitShard(settings)
    committer.setup()
    with pytest.raises(RuntimeError, match="duplicate check never saw 1 of its sources"):
        list(committer.process((shard, {"staged": [chunk], "dups": [], "checked": [hashes[0][1][0]]})))
    assert not Path(BuildLayout(out).shard_files(shard)[1]).exists()
    checked = [sid for _, (sid, _, _) in hashes]
    assert list(committer.process((shard, {"staged": [chunk], "dups": [], "checked": checked}))) == [shard]


def test_a_run_that_drops_work_fails_loudly_and_the_rerun_gives_the_uninterrupted_bytes(cluster, tmp_path, capsys,
                                                                                        monkeypatch):
    """The build's guards against a runner that reports success while losing work, on the DaskRunner (work is dropped
    by handing the real pipeline fewer chunks than planned): a shard lost whole is caught by the driver's marker check
    after the run, chunks lost from a shard stop the pipeline (CommitShard's coverage check); each is one line, exit 1,
    and the same command then finishes with the bytes of an uninterrupted run."""
    from n2m.pipelines import job

    src = _sources(tmp_path, 8)
    flags = ["--split", "train=1", "--sources-per-shard", "4"]  # 2 shards of 4 one-source chunks (8 sources, 2 workers)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert build(src, reference, *flags, "--direct_running_mode=in_memory") == 0
    real_run = job.run_pipeline

    def losing(drop):
        def run(settings, chunks, committed, session):
            kept = [c for c in chunks if not drop(c)]
            assert len(kept) < len(chunks)
            real_run(settings, kept, committed, session)

        return run

    # first a whole shard (the other is committed), then one chunk of it on the re-run
    lost = [(lambda c: c.startswith("train-000001_"),
             f"the {DASK_RUNNER} run finished but 1 of 2 planned shards were not committed (train-000001)"),
            (lambda c: c == "train-000001_000001-000002",
             "the pipeline stopped: shard train-000001: staged chunks ['train-000001_000000-000001', "
             "'train-000001_000002-000003', 'train-000001_000003-000004'] do not cover its 4 sources")]
    for drop, message in lost:
        monkeypatch.setattr(job, "run_pipeline", losing(drop))
        assert build(src, out, *flags, *_on(cluster)) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    monkeypatch.setattr(job, "run_pipeline", real_run)
    assert build(src, out, *flags, *_on(cluster)) == 0
    assert shard_bytes(out) == shard_bytes(reference) and len(shard_bytes(out)) == 2
    assert _tables(out) == _tables(reference)


def test_one_beam_option_convention(tmp_path, capsys):
    parser = build_parser({"build": ("", "n2m.pipelines.cli")})

    def setup_of(*flags: str):
        return beam_setup(parser.parse_args(["build", "--input", "x", "--output", "y", *flags]))

    # Beam flags before or after '--', --runner as a job flag or a Beam flag: the same options
    assert setup_of("--direct_num_workers=3").args == setup_of("--", "--direct_num_workers=3").args
    assert setup_of("--runner", "DaskRunner", "--dask_client_address=tcp://h:1").args == \
        setup_of("--", "--runner=DaskRunner", "--dask_client_address=tcp://h:1").args
    dask = setup_of("--dask-workers", "2")
    assert (dask.kind, dask.workers, dask.runner) == ("dask", 2, DASK_RUNNER)
    assert setup_of("--runner", "DataflowRunner", "--project=p").kind == "remote"
    # mistakes: one line each, exit code 2
    src = _sources(tmp_path, 1)
    for flags, message in [
        (["--bogus_flag=1"], "unknown option(s) for this job or Beam: --bogus_flag"),
        (["--", "--bogus_flag"], "unknown option(s) for this job or Beam: --bogus_flag"),
        (["--runner", "NoSuchRunner"], "--runner NoSuchRunner: not a Beam runner"),
        (["--runner", "DataflowRunner", "--dask-workers", "2"], "--dask-workers must be >= 1 and goes with"),
        (["--dask-workers", "2", "--dask_client_address=tcp://h:1"], "excludes --dask_client_address"),
        (["--runner", "DirectRunner", "--", "--runner=DaskRunner"], "--runner given twice"),
        (["--runner", "DaskRunner", "--dask_client_address=tcp://127.0.0.1:9", "--dask_connection_timeout=1"],
         "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
    ]:
        assert build(src, tmp_path / "out", *flags) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def _documented_commands(job: str) -> list[list[str]]:
    """The arguments after ``n2m JOB`` (or ``-m n2m.cli JOB``) of every command line in docs/scaling.md's bash blocks
    (continuation lines joined, comments, ``...`` and a trailing ``&`` dropped)."""
    text = (REPO / "docs" / "scaling.md").read_text()
    lines = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S)).replace("\\\n", " ").splitlines()
    commands = []
    for words in (shlex.split(line, comments=True) for line in lines):
        starts = [i for i in range(len(words) - 1) if words[i] in ("n2m", "n2m.cli") and words[i + 1] == job]
        if starts:
            commands.append([w for w in words[starts[0] + 2:] if w not in ("...", "&")])
    return commands


def test_the_documented_scaling_command_lines_parse(monkeypatch):
    """Every ``n2m build`` / ``n2m label`` line of docs/scaling.md (Dask, Dataflow with --extra_package,
    --setup_file or --sdk_container_image, Flink, Spark) passes the option convention with the runner it names, and
    the torchrun / SLURM ``n2m train`` lines parse: the remote routes cannot run here, their flags are checked."""
    runners = {"DaskRunner": DASK_RUNNER, "DataflowRunner": "DataflowRunner", "FlinkRunner": "FlinkRunner",
               "SparkRunner": "SparkRunner"}
    builds, labels = _documented_commands("build"), _documented_commands("label")
    assert len(builds) == 7 and len(labels) == 1
    for job, argv in [*(("build", a) for a in builds), *(("label", a) for a in labels)]:
        if job == "build" and "--input" not in argv:  # the --setup_file line elides them
            argv = ["--input", "gs://BUCKET/manifest.jsonl", "--output", "gs://BUCKET/build", *argv]
        setup = beam_setup(build_parser({job: ("", f"n2m.{'pipelines' if job == 'build' else 'labeling'}.cli")})
                           .parse_args([job, *argv]))
        named = argv[argv.index("--runner") + 1] if "--runner" in argv else "DaskRunner"  # --dask-workers alone
        assert setup.runner == runners[named], argv
        assert setup.kind == ("dask" if named == "DaskRunner" else "remote"), argv
    trains = [a for a in _documented_commands("train") if "--stage" in a]  # the by-hand lines elide the rest
    assert len(trains) == 2
    parser = build_parser({"train": ("", "n2m.training.train_cli")})
    for argv in trains:
        args = parser.parse_args(["train", *argv])
        assert (args.num_nodes, args.devices, args.strategy) == (2, "4", "ddp"), argv


@pytest.mark.integration
def test_a_fresh_venv_with_only_the_wheel_runs_a_dask_build(tmp_path):
    """The remote-runner route (docs/scaling.md): workers get n2m from its wheel. A venv holding only that wheel (its
    dependencies come from this environment's site-packages, which a .pth line adds without running the editable
    install's hook) runs a DaskRunner build from another folder; nothing is imported from the source tree."""
    source = tmp_path / "source"
    for name in ("n2m", "pipelines", "labeling", "training", "eval"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
        str(source))
    wheel, = (tmp_path / "dist").glob("n2m-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    site, = venv.glob("lib/python*/site-packages")
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "apache_beam").is_dir())
    (site / "dependencies.pth").write_text(f"{deps}\n")
    run(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
        "--no-index", str(wheel))
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = run(str(venv / "bin" / "python"), "-c", "import n2m, n2m.pipelines.job, n2m.labeling.job, sys; "
                "print(n2m.__file__, n2m.pipelines.job.__file__, n2m.labeling.job.__file__, *sys.path, sep='\\n')",
                cwd=work, env=env).stdout.split()
    modules, paths = where[:3], where[3:]
    assert all(m.startswith(str(site)) for m in modules) and str(REPO) not in paths and str(work) not in paths
    src, reference = _sources(tmp_path, 3), tmp_path / "reference"
    assert build(src, reference, "--direct_running_mode=in_memory") == 0
    run(str(venv / "bin" / "n2m"), "build", "--input", str(src), "--output", "out", *BUILD_FLAGS, "--dask-workers",
        "2", cwd=work, env=env, timeout=180)
    assert shard_bytes(work / "out") == shard_bytes(reference) and shard_bytes(reference)

"""``n2m train --num-nodes 2 --devices 1`` as two local processes on 127.0.0.1 (Lightning DDP over gloo): each rank
reads a disjoint half of the shards, both ranks end with the same weights, and the checkpoint resumes on one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_train import Probe, run_cli, train_argv

from n2m.cli import build_parser, main
from n2m.training.train_cli import run_train

pytestmark = pytest.mark.timeout(300)

# One "node": the n2m train command line, run with a callback that records the keys of every batch this rank trains
# on and a digest of its final weights (run_train's extra_callbacks hook); everything else is the real CLI path.
NODE = textwrap.dedent('''
    import hashlib, json, sys
    import lightning as L
    from n2m.cli import build_parser
    from n2m.training.train_cli import run_train

    class Record(L.Callback):
        def __init__(self):
            self.keys = []

        def on_train_batch_start(self, trainer, module, batch, index):
            self.keys.extend(batch["key"])

        def on_train_end(self, trainer, module):
            digest = hashlib.sha1(b"".join(p.detach().numpy().tobytes() for p in module.net.parameters()))
            with open(f"{sys.argv[1]}/rank{trainer.global_rank}.json", "w") as handle:
                json.dump({"keys": self.keys, "world": trainer.world_size, "weights": digest.hexdigest()}, handle)

    args = build_parser({"train": ("", "n2m.training.train_cli")}).parse_args(sys.argv[2:])
    sys.exit(run_train(args, extra_callbacks=(Record(),)))
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two_nodes(script: Path, record: Path, argv: list[str], timeout: float = 240.0) -> str:
    """Run the two nodes on a fresh port; "" when both exit 0, else every node's exit code and output tail. A node
    that fails stops the other at once (its peer would wait for it in the rendezvous until the timeout)."""
    port = _free_port()
    nodes, logs = [], [record / f"node{rank}-port{port}.log" for rank in range(2)]
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(rank),
               "OMP_NUM_THREADS": "1"}
        with open(logs[rank], "w") as log:  # a file, not a pipe: a chatty node never blocks on a full pipe
            nodes.append(subprocess.Popen([sys.executable, str(script), str(record), *argv], env=env, stdout=log,
                                          stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        codes = [n.poll() for n in nodes]  # every node polled each time (any() would stop at the first running one)
        if None not in codes or any(c not in (None, 0) for c in codes):
            break
        time.sleep(0.2)
    for node in nodes:
        if node.poll() is None:
            node.kill()
        node.wait()
    if all(node.returncode == 0 for node in nodes):
        return ""
    return "\n".join(f"rank {r}: exit {n.returncode}\n{log.read_text()[-2000:]}"
                     for r, (n, log) in enumerate(zip(nodes, logs)))


@pytest.mark.slow
def test_two_nodes_read_disjoint_shards_and_the_checkpoint_resumes_on_one(tiny_build, tiny_t5, tmp_path):
    out, record = tmp_path / "run", tmp_path / "record"
    record.mkdir()
    script = tmp_path / "node.py"
    script.write_text(NODE)
    # batch 3 x 2 steps = 6 examples per rank: one pass over its half of the 4 train shards (3 clips each)
    argv = train_argv(tiny_build, tiny_t5, "generator", out, "--num-nodes", "2", "--strategy", "ddp",
                      "--batch-size", "3", "--max-steps", "2", "--shuffle-buffer", "1", "--val-every", "1000")
    failures = _launch_two_nodes(script, record, argv)
    if failures:  # a port taken between choosing it and binding it (other tests run Beam and Dask servers): once more
        failures = _launch_two_nodes(script, record, argv)
    assert not failures, failures
    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    shard_of = {row["key"]: row["shard"] for row in pq.read_table(Path(tiny_build["root"]) / "index.parquet")
                .to_pylist()}
    keys = [set(r["keys"]) for r in ranks]
    shards = [{shard_of[k] for k in ks} for ks in keys]
    assert len(ranks[0]["keys"]) == len(ranks[1]["keys"]) == 6
    assert not keys[0] & keys[1] and keys[0] | keys[1] == set(tiny_build["keys"]["train"])
    assert not shards[0] & shards[1] and len(shards[0]) == len(shards[1]) == 2
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the replicas equal
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 2 and saved["n2m"]["config"]["trainer"]["num_nodes"] == 2
    # the same run continued on one process
    args = build_parser({"train": ("train", "n2m.training.train_cli")}).parse_args(
        train_argv(tiny_build, tiny_t5, "generator", out, "--batch-size", "3", "--max-steps", "3", "--resume"))
    probe = Probe()
    assert run_train(args, extra_callbacks=(probe,)) == 0
    assert probe.step == 2
    for name, value in saved["state_dict"].items():
        assert torch.equal(probe.weights[name], value), name
    resumed = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 3 and resumed["n2m"]["config"]["trainer"]["num_nodes"] == 1


def test_more_nodes_without_a_launcher_is_a_one_line_error(tiny_build, tiny_t5, tmp_path, capsys, monkeypatch):
    for name in ("NODE_RANK", "GROUP_RANK", "RANK", "SLURM_NTASKS", "LSB_JOBID", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    argv = train_argv(tiny_build, tiny_t5, "generator", tmp_path / "run", "--num-nodes", "2", "--max-steps", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "--num-nodes 2" in err and "NODE_RANK" in err and len(err.splitlines()) == 1
    assert run_cli(train_argv(tiny_build, tiny_t5, "generator", tmp_path / "run", "--num-nodes", "2",
                              "--dry-run")) == 0

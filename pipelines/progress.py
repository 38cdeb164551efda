"""Progress of a running build, polled from the driver: a tqdm bar over staged chunks, committed shards as postfix.

Beam runs the pipeline synchronously in the driver (DirectRunner) or remotely, so the driver cannot count elements
itself; it watches the files the workers commit (chunk stage markers, then shard markers) under OUT instead, which
works the same for a local folder and an fsspec URI.
"""

from __future__ import annotations

import threading
from typing import IO

from tqdm.auto import tqdm

from n2m.layout import BuildLayout, committed_shards, parse_shard_name
from n2m.pipelines.job import parse_chunk_name
from n2m.storage import Store


class ShardProgress:
    """Context manager: a bar of chunks decoded (a chunk of a committed shard counts as decoded), with the number of
    shards committed as postfix."""

    def __init__(self, out: str, chunks: list[str], interval_s: float = 1.0, enabled: bool = True,
                 stream: IO[str] | None = None):
        self.out, self.store = out, Store(out)
        self.stage_dir = BuildLayout(out).stage_dir
        self.chunks = {c: parse_chunk_name(c)[0] for c in chunks}
        self.shards = set(self.chunks.values())
        self.splits = sorted({parse_shard_name(n)[0] for n in self.shards})
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.bar = tqdm(total=len(chunks), unit="chunk", desc="build", disable=not enabled, dynamic_ncols=True,
                        file=stream)
        self.thread = threading.Thread(target=self._run, name="n2m-progress", daemon=True)

    def _poll(self) -> None:
        committed = {shard.name for shard in committed_shards(self.out, self.splits)} & self.shards
        staged = {f[:-5] for f in self.store.listdir(self.stage_dir) if f.endswith(".json")}
        self.bar.n = sum(chunk in staged or shard in committed for chunk, shard in self.chunks.items())
        self.bar.set_postfix(committed=len(committed), refresh=False)
        self.bar.refresh()

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self._poll()
            except OSError:  # a file vanished between listing and reading: try again next time
                continue

    def __enter__(self) -> ShardProgress:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if exc[0] is None:
            self._poll()
        self.bar.close()

"""The OpenAI-compatible backend against a scripted server on 127.0.0.1: retries on malformed JSON, HTTP 500 and slow
answers past the timeout; cache hits on re-run; resume after the client is killed mid-run; cleaning of answers that name
the artist or are refusals/meta talk/URLs; API key from the named environment variable; one-line fatal errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from n2m.cli import main
from n2m.labeling.vocab.tracks import Track
from n2m.schema import text_id

ROOT = Path(__file__).resolve().parents[2]
GOOD = ("A warm, slow piano ballad with soft strings. The drums are brushed and quiet. "
        "It sounds like an intimate late-night studio recording.")


class Script:
    """What the server answers, by track title; every request is logged (title, Authorization header)."""

    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.gate_after: int | None = None  # block every answer after this many answered (crash test)
        self.answered = 0

    def count(self) -> Counter:
        with self.lock:
            return Counter(title for title, _ in self.log)

    def respond(self, title: str, attempt: int) -> tuple[int, str, float]:
        """(status, body, delay seconds) for the ``attempt``-th request (1-based) about ``title``."""
        if title == "Broken Json" and attempt == 1:
            return 200, '{"choices": [{"message": {"content": "A slow pia', 0.0
        if title == "Wrong Shape" and attempt == 1:
            return 200, json.dumps({"choices": []}), 0.0
        if title == "Flaky" and attempt <= 2:
            return 500, "upstream overloaded", 0.0
        if title == "Sleepy" and attempt == 1:
            return 200, _answer(GOOD), 1.5  # past the client's 0.5 s timeout
        if title == "Dead":
            return 503, "down", 0.0
        if title == "Named":
            return 200, _answer(
                "Here is a description of the music. Nora Vale sings over a slow, dreamy synth pad. "
                "As an AI, I cannot listen to the recording. Listen at https://example.com/t/42 now. "
                "Gentle reverb washes over the slow synth pads."), 0.0
        if title.startswith("Song"):  # crash test: one distinct sentence per track
            colour = ("soft", "bright", "dark", "warm", "thin", "rich", "deep", "hollow")[int(title.split()[-1]) % 8]
            return 200, _answer(f"{GOOD} It rides on a {colour} bass line throughout."), 0.0
        return 200, _answer(GOOD), 0.0


def _answer(content: str) -> str:
    return json.dumps({"id": "x", "object": "chat.completion",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def do_POST(self):  # noqa: N802 - http.server's naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["model"] == "scripted-model"
            user = body["messages"][-1]["content"]
            title = user.split('"')[1]
            with script.lock:
                script.log.append((title, self.headers.get("Authorization", "")))
                attempt = sum(t == title for t, _ in script.log)
                blocked = script.gate_after is not None and script.answered >= script.gate_after
            if blocked:
                script.gate.wait(timeout=20)
            status, text, delay = script.respond(title, attempt)
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text.encode())))
                self.end_headers()
                self.wfile.write(text.encode())
            except (BrokenPipeError, ConnectionResetError):
                return
            with script.lock:
                script.answered += 1

    return Handler


@pytest.fixture()
def server():
    script = Script()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield script, f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    script.gate.set()
    httpd.shutdown()
    httpd.server_close()


def _manifest(path: Path, titles: list[str]) -> Path:
    with path.open("w") as handle:
        for i, title in enumerate(titles):
            handle.write(json.dumps({"path": f"a/{i}.wav", "title": title, "artist": "Nora Vale",
                                     "tags": ["ambient", "calm"]}) + "\n")
    return path


def _args(manifest: Path, url: str, out: Path, *extra: str) -> list[str]:
    return ["vocab", "generate", "--from", str(manifest), "--llm", f"openai:{url}", "--model", "scripted-model",
            "--out", str(out), "--timeout", "0.5", "--backoff", "0.01", "--retries", "3", *extra]


def test_retries_cleaning_and_cache_hits(server, tmp_path, monkeypatch, capsys):
    script, url = server
    monkeypatch.setenv("N2M_TEST_KEY", "sk-test-123")
    titles = ["Plain Song", "Broken Json", "Wrong Shape", "Flaky", "Sleepy", "Named"]
    manifest = _manifest(tmp_path / "m.jsonl", titles)
    out = tmp_path / "vocab" / "lf.parquet"
    assert main(_args(manifest, url, out, "--api-key-env", "N2M_TEST_KEY", "--concurrency", "3")) == 0

    counts = script.count()
    assert counts == {"Plain Song": 1, "Broken Json": 2, "Wrong Shape": 2, "Flaky": 3, "Sleepy": 2, "Named": 1}
    assert {auth for _, auth in script.log} == {"Bearer sk-test-123"}

    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"]["total"] == 6 and meta["requests"]["generated"] == 6 and meta["requests"]["failed"] == 0
    assert meta["requests"]["retries"] == 1 + 1 + 2 + 1
    # "Named": meta talk, the artist, a refusal and a URL are rejected; its last sentence is kept
    assert meta["rejected"] == {"meta": 1, "names_artist": 1, "refusal": 1, "url": 1}
    table = pq.read_table(out).to_pylist()
    texts = [row["text"] for row in table]
    assert "Gentle reverb washes over the slow synth pads." in texts
    assert not any("nora" in t.lower() or "http" in t for t in texts)
    # the GOOD sentences come back from several tracks: kept once, with the first track's provenance
    assert texts.count("A warm, slow piano ballad with soft strings.") == 1
    assert meta["duplicates"] == {"exact": 3 * 4, "near": 0}  # 4 more tracks repeat GOOD's 3 sentences
    assert all(row["id"] == text_id(row["text"]) and row["backend"] == "openai" and row["model"] == "scripted-model"
               and row["prompt_id"] == "describe" for row in table)
    rejected = [json.loads(line) for line in out.with_suffix(".rejected.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in rejected) == ["meta", "names_artist", "refusal", "url"]

    before = len(script.log)
    capsys.readouterr()
    assert main(_args(manifest, url, out)) == 0  # no key this time: the answers come from the cache
    assert len(script.log) == before  # zero requests the second time
    assert "6 cached, 0 generated" in capsys.readouterr().out
    assert pq.read_table(out).to_pylist() == table


def test_failures_are_recorded_not_cached_and_fail_the_job_over_the_limit(server, tmp_path, capsys):
    script, url = server
    manifest = _manifest(tmp_path / "m.jsonl", ["Plain Song", "Dead", "Other Song"])
    out = tmp_path / "lf.parquet"
    assert main(_args(manifest, url, out, "--max-failures", "0.5")) == 0
    assert script.count()["Dead"] == 4  # first attempt + 3 retries
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"]["failed_by_reason"] == {"http_503": 1}
    assert meta["rejected"]["request_failed"] == 1

    capsys.readouterr()
    assert main(_args(manifest, url, out, "--max-failures", "0.1")) == 1  # failed answers are retried, never cached
    assert script.count() == {"Plain Song": 1, "Other Song": 1, "Dead": 8}
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "1 of 3 requests failed" in err and "re-run" in err


def test_fatal_http_status_is_a_one_line_error(tmp_path, capsys):
    class Unauthorised(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Unauthorised)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        manifest = _manifest(tmp_path / "m.jsonl", ["Plain Song"])
        assert main(_args(manifest, url, tmp_path / "lf.parquet", "--api-key-env", "N2M_NO_SUCH_VAR")) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "HTTP 401" in err and "$N2M_NO_SUCH_VAR" in err
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_openai_needs_a_model_name(tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.jsonl", ["Plain Song"])
    code = main(["vocab", "generate", "--from", str(manifest), "--llm", "openai:http://127.0.0.1:9/v1",
                 "--out", str(tmp_path / "lf.parquet")])
    assert code == 2 and "--model" in capsys.readouterr().err


def test_resume_after_the_client_is_killed_mid_run(server, tmp_path):
    script, url = server
    titles = [f"Song {i}" for i in range(8)]
    manifest = _manifest(tmp_path / "m.jsonl", titles)
    out = tmp_path / "vocab" / "lf.parquet"
    script.gate_after, script.gate = 3, threading.Event()  # answers 3, then holds every further request
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "n2m.cli", *_args(manifest, url, out, "--concurrency", "1",
                                                                     "--timeout", "30")],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(script.log) < 4 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(script.log) >= 4, "the client never reached its fourth request"
        time.sleep(0.3)  # let the client commit what it was given
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # the crash left no half-written vocabulary
    with sqlite3.connect(out.parent / "llm_cache.sqlite") as db:
        cached = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    assert 1 <= cached <= 3
    script.gate.set()
    script.gate_after = None

    sent_before = len(script.log)
    assert main(_args(manifest, url, out)) == 0
    assert len(script.log) - sent_before == 8 - cached  # only what the crash lost is asked again
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"]["cached"] == cached and meta["requests"]["generated"] == 8 - cached

    # the resumed vocabulary equals an uninterrupted run's (fresh cache, same server answers)
    fresh = tmp_path / "fresh" / "lf.parquet"
    assert main(_args(manifest, url, fresh)) == 0
    assert pq.read_table(fresh).to_pylist() == pq.read_table(out).to_pylist()
    assert pq.read_table(out).num_rows == 3 + 8


def test_payload_carries_the_generation_options():
    from n2m.labeling.vocab.backends import GenerationOptions, Request
    from n2m.labeling.vocab.openai_http import OpenAIBackend

    backend = OpenAIBackend("http://127.0.0.1:1/v1", GenerationOptions(model="m", temperature=0.3, top_p=0.5,
                                                                       max_new_tokens=77, seed=5))
    track = Track("t", "T", "A", ())
    payload = backend._payload(Request(track, "p", ({"role": "user", "content": "hi"},), sample=2))
    assert payload == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.3,
                       "top_p": 0.5, "max_tokens": 77, "seed": 7, "n": 1}

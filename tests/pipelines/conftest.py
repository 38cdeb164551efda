"""Fixtures of the ``n2m build`` tests: a small corpus with every kind of bad source, a local HTTP server on
127.0.0.1, and one shared multi-processing build of it all."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from build_helpers import SLOW_S, TRICKLE_S, build, music, video_only_mp4, write_ogg

from n2m import audio
from n2m.schema import source_id

# ---------------------------------------------------------------------------------------------------------------------
# HTTP server


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    flaky_ok = threading.Event()

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, length: bool = True) -> None:
        self.send_response(code)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (size cap, timeout): fine
            pass

    def _trickle(self, size: int) -> None:
        """Send ``size`` bytes one at a time (bounded: at most ``size * TRICKLE_S`` seconds, less once the client
        hangs up)."""
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        try:
            for _ in range(size):
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(TRICKLE_S)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/slow.wav":
            time.sleep(SLOW_S)  # bounded: the handler thread always finishes
            self._send(200, b"late")
        elif self.path == "/big.wav":  # no Content-Length: the size cap must trip while streaming
            self._send(200, b"\0" * (2 << 20), length=False)
        elif self.path == "/trickle.wav":  # a byte every TRICKLE_S: no read ever stalls for --fetch-timeout
            self._trickle(200)
        elif self.path == "/flaky.wav":
            if self.flaky_ok.is_set():
                self._send(200, self.files["/flaky.wav"])
            else:
                self._send(503, b"busy")
        elif self.path in self.files:
            self._send(200, self.files[self.path])
        else:
            self._send(404, b"not found")


@pytest.fixture(scope="session")
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Handler
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------------------------------------------------------------
# Corpus


@dataclass
class Corpus:
    root: Path
    manifest: Path
    expected: dict[str, tuple[str, str]] = field(default_factory=dict)  # uri -> (status, reason)
    duplicate_pair: tuple[str, str] = ("", "")  # (uri of the original, uri of the same PCM in another container)
    tones: dict[str, tuple[float, float]] = field(default_factory=dict)  # uri -> (frequency, amplitude) of pure tones
    captions: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, http_server) -> Corpus:
    base_url, handler = http_server
    root = tmp_path_factory.mktemp("corpus")
    rows: list[dict] = []
    expected: dict[str, tuple[str, str]] = {}

    def add(name: str, status: str, reason: str = "", **meta) -> str:
        uri = name if name.startswith("http") else str(root / name)
        rows.append({"path": name, "title": name.split("/")[-1], "artist": "n2m tests", **meta})
        expected[uri] = (status, reason)
        return uri

    # good sources: several containers, rates and channel counts, 3-6 s
    formats = [("a.wav", 44100, 2), ("b.flac", 48000, 1), ("c.ogg", 22050, 2), ("d.mp3", 44100, 2),
               ("e.flac", 32000, 2), ("sub/f.wav", 24000, 1)]
    captions = {}
    for i, (name, sr, ch) in enumerate(formats):
        x = music(3.0 + 0.6 * i, sr, ch, seed=i)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".ogg"):
            write_ogg(root / name, x, sr)
        else:
            audio.write(root / name, x, sr)
        caption = f"test melody number {i}"
        captions[str(root / name)] = caption
        add(name, "ok", caption=caption)
    # a pure tone (closed-form checks of level and pitch): 440 Hz at amplitude 0.5, 5 s at 48 kHz
    t = np.arange(5 * 48000) / 48000
    audio.write(root / "tone.wav", (0.5 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32), 48000)
    tone = add("tone.wav", "ok")
    # the same int16 PCM as a.wav, in a FLAC container
    pcm, sr = sf.read(root / "a.wav", dtype="int16")
    sf.write(root / "a_copy.flac", pcm, sr, subtype="PCM_16")
    copy = add("a_copy.flac", "duplicate", "duplicate_pcm")
    original = str(root / "a.wav")
    if source_id(copy) < source_id(original):  # the canonical copy is the smaller source id
        original, copy = copy, original
        expected[original], expected[copy] = ("ok", ""), ("duplicate", "duplicate_pcm")

    (root / "empty.wav").write_bytes(b"")
    add("empty.wav", "failed", "empty")
    flac = (root / "b.flac").read_bytes()
    (root / "truncated.flac").write_bytes(flac[: len(flac) // 2])
    add("truncated.flac", "failed", "truncated")
    (root / "random.mp3").write_bytes(np.random.default_rng(7).integers(0, 256, 6000, dtype=np.uint8).tobytes())
    add("random.mp3", "failed", "unsupported_format")
    (root / "notes.txt").write_text("not audio at all\n" * 50)
    add("notes.txt", "failed", "unsupported_format")
    (root / "video.mp4").write_bytes(video_only_mp4())
    add("video.mp4", "failed", "unsupported_format")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("inside.wav", audio.encode(music(1.0, 8000, 1, 3), 8000, "WAV"))
    (root / "archive.zip").write_bytes(archive.getvalue())
    add("archive.zip", "failed", "unsupported_format")
    audio.write(root / "short.wav", music(0.5, 16000, 1, seed=11), 16000)
    add("short.wav", "filtered", "too_short")
    audio.write(root / "silent.wav", np.zeros((1, 3 * 16000), np.float32), 16000)
    add("silent.wav", "filtered", "silent")
    add("does/not/exist.wav", "failed", "missing")

    handler.files.update({"/ok.wav": audio.encode(music(2.5, 22050, 1, seed=21), 22050, "WAV"),
                          "/flaky.wav": audio.encode(music(3.0, 22050, 1, seed=22), 22050, "WAV")})
    add(f"{base_url}/ok.wav", "ok")
    add(f"{base_url}/gone.wav", "failed", "missing")
    add(f"{base_url}/slow.wav", "failed", "timeout")
    add(f"{base_url}/big.wav", "failed", "too_large")
    rows.append({"title": "row without a path"})
    manifest = root / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return Corpus(root, manifest, expected, (original, copy), {tone: (440.0, 0.5)}, captions)


@pytest.fixture(scope="session")
def built(corpus, tmp_path_factory) -> Path:
    """The corpus built once with the default runner: DirectRunner, multi-processing, 2 workers."""
    out = tmp_path_factory.mktemp("build") / "out"
    assert build(corpus.manifest, out, "--direct_num_workers=2") == 0
    return out



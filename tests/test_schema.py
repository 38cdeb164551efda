"""The build tables' contract (n2m.schema): a real ``n2m build`` writes ``sources.parquet`` with exactly
``SOURCES_SCHEMA``, and its ``decoder`` column says which decoder produced each source's audio."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from n2m import audio
from n2m.schema import SOURCES_SCHEMA

_BUILD_TESTS = Path(__file__).resolve().parent / "pipelines"


def _build_helpers():
    """The build tests' helpers (the real CLI with small-build flags, Ogg page surgery), imported from their folder."""
    sys.path.insert(0, str(_BUILD_TESTS))
    try:
        import build_helpers
    finally:
        sys.path.remove(str(_BUILD_TESTS))
    return build_helpers


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """A folder of one source per decoder path, built through the real CLI: ``(OUT, {file name: sources row})``."""
    helpers = _build_helpers()
    root = tmp_path_factory.mktemp("decoders")
    noise = (0.2 * np.random.default_rng(0).standard_normal((1, 4 * 22050))).astype(np.float32)
    ogg = audio.encode(noise, 22050, "OGG")
    (root / "gap.ogg").write_bytes(helpers.with_page_gap(ogg, 4))  # libsndfile drops audio at the gap; FFmpeg not
    (root / "whole.ogg").write_bytes(ogg)
    song = np.round(helpers.music(3.0, 32000, 2, seed=3) * 32768) / 32768  # on the 16-bit grid: both store it exactly
    audio.write(root / "song.flac", song, 32000)
    audio.write(root / "song.wav", song, 32000)  # the same PCM as song.flac: one of the two is a duplicate
    audio.write(root / "short.wav", song[:, :8000], 32000)  # 0.25 s: under --min-clip-seconds 1
    (root / "notes.wav").write_bytes(b"not audio at all\n" * 64)
    out = tmp_path_factory.mktemp("out") / "build"
    assert helpers.build(root, out) == 0
    rows = pq.read_table(out / "sources.parquet").to_pylist()
    return out, {Path(row["source_uri"]).name: row for row in rows}


def test_sources_parquet_has_exactly_the_contract_schema(built):
    out, rows = built
    assert pq.read_schema(out / "sources.parquet").remove_metadata() == SOURCES_SCHEMA
    assert sorted(rows) == ["gap.ogg", "notes.wav", "short.wav", "song.flac", "song.wav", "whole.ogg"]


def test_decoder_column_names_the_decoder_of_each_source(built):
    _, rows = built
    status = {name: (row["status"], row["decoder"]) for name, row in rows.items()}
    assert status["whole.ogg"] == ("ok", "soundfile:ogg")
    assert status["gap.ogg"] == ("ok", "pyav:ogg")  # the FFmpeg second decode, kept because it reached the end
    assert "decoded by pyav:ogg" in rows["gap.ogg"]["message"]
    assert status["short.wav"] == ("filtered", "soundfile:wav")  # decoded, then filtered: the decoder is known
    assert status["notes.wav"] == ("failed", "")  # nothing decoded it
    pair = {status["song.flac"], status["song.wav"]}
    assert pair in ({("ok", "soundfile:flac"), ("duplicate", "soundfile:wav")},
                    {("duplicate", "soundfile:flac"), ("ok", "soundfile:wav")})

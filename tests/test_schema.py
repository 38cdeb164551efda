"""The contracts of n2m.schema: a real ``n2m build`` writes ``sources.parquet`` with exactly ``SOURCES_SCHEMA``, and its
``decoder`` column says which decoder produced each source's audio; the build tables are read the same way locally and
behind a URI; ``n2m sample``'s sidecar holds exactly ``SAMPLE_SIDECAR_FIELDS``."""

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


def test_the_sample_writer_writes_the_sidecar_contract(tmp_path):
    """``n2m sample``'s writer (n2m.training.sample_files) gives every field of ``SAMPLE_SIDECAR_FIELDS``, and nothing else;
    :func:`n2m.schema.read_sidecar` finds it beside the clip, and says ``None`` for a clip without one."""
    from n2m.schema import SAMPLE_SIDECAR_FIELDS, read_sidecar, sidecar_path
    from n2m.training.sample_files import write_result
    from n2m.training.sampling import Prompt, Result

    wave = np.zeros(2400, np.float32)
    meta = {"seconds": 0.1, "stages": {"generator": {"build_id": "b1", "labels": "v1"}}, "settings": {}, "timing": {},
            "versions": {}}
    write_result(tmp_path, Result("c0", Prompt("c0", "a tune"), 0, 7, wave, 24_000, metadata=meta),
                 {"seed": 7, "cascade": "waveform"})
    sidecar = read_sidecar(tmp_path / "c0.wav")
    assert sidecar_path(tmp_path / "c0.wav") == tmp_path / "c0.json"
    assert sorted(sidecar) == sorted(SAMPLE_SIDECAR_FIELDS)
    assert sidecar["lineage"] == {"build_ids": ["b1"], "label_sets": ["v1"]} and sidecar["seed"] == 7
    assert read_sidecar(tmp_path / "other.wav") is None
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_sidecar(tmp_path / "list.wav")


def test_build_tables_are_read_locally_and_behind_a_uri_and_a_missing_one_is_a_one_line_error(tmp_path):
    import uuid

    import fsspec
    import pyarrow as pa

    from n2m.errors import UserError
    from n2m.schema import INDEX_SCHEMA, read_index, read_sources

    row = {"key": "0123456789abcdef_0000", "source_id": "0123456789abcdef", "source_uri": "/a.wav", "clip_index": 0,
           "split": "train", "shard": "train-000000.tar", "offset_s": 0.0, "duration_s": 10.0, "padded": False,
           "sample_rate": 24000, "channels": 1, "rms_db": -20.0}
    pq.write_table(pa.Table.from_pylist([row], schema=INDEX_SCHEMA), tmp_path / "index.parquet")
    uri = f"memory://n2m-schema-{uuid.uuid4().hex[:8]}/out"
    fsspec.filesystem("memory").put(str(tmp_path / "index.parquet"), f"{uri}/index.parquet")
    for build in (str(tmp_path), uri):
        assert read_index(build, ["key", "split"]).to_pylist() == [{"key": row["key"], "split": "train"}]
        with pytest.raises(UserError, match=r"sources.parquet is missing: is .* a finished n2m build"):
            read_sources(build, ["source_id"])
    fsspec.filesystem("memory").rm(uri, recursive=True)

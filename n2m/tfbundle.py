"""Read TensorFlow checkpoints (the V2 "tensor bundle") without TensorFlow.

A bundle with prefix ``P`` is two files (TensorFlow's ``tensorflow/core/util/tensor_bundle``):

- ``P.index``: a LevelDB table (the SSTable format of LevelDB's ``doc/table_format.md``) mapping each tensor name to a
  serialized ``BundleEntryProto`` (dtype, shape, shard, byte offset and size in the data file, masked CRC-32C of the
  bytes). The empty key holds the ``BundleHeaderProto`` (number of shards, endianness).
- ``P.data-00000-of-00001`` (one file per shard): the tensors' raw bytes, little-endian, C order.

Everything is checked: the table's footer magic, each block's masked CRC-32C, every entry's bounds and the CRC-32C of
every tensor read. A damaged or unsupported file raises :class:`BundleError` (a :class:`UserError`) in one line.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import google_crc32c
import numpy as np

from n2m.errors import UserError

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
_MASK_DELTA = 0xA282EAD8

# tensorflow/core/framework/types.proto DataType -> numpy (little-endian); strings and quantised types unsupported.
DTYPES: dict[int, np.dtype] = {
    1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 4: np.dtype("u1"), 5: np.dtype("<i2"),
    6: np.dtype("i1"), 9: np.dtype("<i8"), 10: np.dtype("?"), 17: np.dtype("<u2"), 19: np.dtype("<f2"),
    22: np.dtype("<u4"), 23: np.dtype("<u8"),
}


class BundleError(UserError):
    """A checkpoint file that is missing, damaged (bad CRC, truncated) or uses a feature this reader does not."""


@dataclass(frozen=True)
class BundleEntry:
    """One tensor's ``BundleEntryProto``: where its bytes are and what they hold."""

    name: str
    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(bytes(data)))


def mask_crc(crc: int) -> int:
    """LevelDB's CRC mask (``crc32c::Mask``): rotate right by 15 bits and add a constant, modulo 2^32."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------------------------------
# Protocol-buffer and LevelDB primitives


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise BundleError("malformed varint in checkpoint index")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _proto_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message -> ``[(field number, value)]``; varints and fixed ints as ``int``, length-delimited as bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire} in checkpoint index")
        if pos > len(buf):
            raise BundleError("truncated protobuf in checkpoint index")
        out.append((field, value))
    return out


def _read_block(data: bytes, offset: int, size: int, label: str) -> bytes:
    """A table block's contents after checking its trailer (compression type 0 and the masked CRC-32C)."""
    end = offset + size
    if offset < 0 or end + BLOCK_TRAILER_SIZE > len(data):
        raise BundleError(f"{label}: block at {offset} (+{size}) lies outside the file")
    contents = data[offset:end]
    kind = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if mask_crc(crc32c(data[offset:end + 1])) != stored:
        raise BundleError(f"{label}: block at {offset} fails its CRC-32C check (file damaged)")
    if kind != 0:
        raise BundleError(f"{label}: compressed table blocks (type {kind}) are not supported")
    return contents


def _block_entries(block: bytes, label: str) -> list[tuple[bytes, bytes]]:
    """A block's ``(key, value)`` pairs, undoing the prefix compression (restart array at the end)."""
    if len(block) < 4:
        raise BundleError(f"{label}: block too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 * (restarts + 1)
    if limit < 0:
        raise BundleError(f"{label}: bad restart count {restarts}")
    out = []
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > limit:
            raise BundleError(f"{label}: malformed block entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        out.append((key, block[pos:pos + length]))
        pos += length
    return out


def _table_items(data: bytes, label: str) -> list[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a LevelDB table, in key order."""
    if len(data) < FOOTER_SIZE:
        raise BundleError(f"{label}: too short to be a checkpoint index")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, 40)[0] != TABLE_MAGIC:
        raise BundleError(f"{label}: not a checkpoint index (bad table magic)")
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # metaindex handle: unused (no filters in bundles)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    items = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, label), label):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        items.extend(_block_entries(_read_block(data, offset, size, label), label))
    return items


# ---------------------------------------------------------------------------------------------------------------------
# Bundles


_ENTRY_INTS = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size", 6: "crc32c"}  # BundleEntryProto field numbers


def _entry(name: str, value: bytes) -> BundleEntry:
    fields = dict.fromkeys(_ENTRY_INTS.values(), 0)
    shape: list[int] = []
    for number, item in _proto_fields(value):
        if number in _ENTRY_INTS:
            fields[_ENTRY_INTS[number]] = int(item)
        elif number == 2:  # TensorShapeProto: repeated Dim dim = 2 (int64 size = 1); bool unknown_rank = 3
            for dim_field, dim in _proto_fields(item):
                if dim_field == 2:
                    shape.append(int(dict(_proto_fields(dim)).get(1, 0)))
                elif dim_field == 3 and dim:
                    raise BundleError(f"tensor {name!r} has an unknown rank")
        elif number == 7:
            raise BundleError(f"tensor {name!r} is stored in slices (partitioned variables are not supported)")
    return BundleEntry(name=name, shape=tuple(shape), **fields)


def read_index(prefix: str | Path) -> dict[str, BundleEntry]:
    """The entries of ``{prefix}.index`` by tensor name (checks the table and a single little-endian shard)."""
    path = Path(f"{prefix}.index")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BundleError(f"cannot read checkpoint index {path}: {err.strerror}") from err
    entries: dict[str, BundleEntry] = {}
    for key, value in _table_items(data, str(path)):
        if key == b"":
            header = dict(_proto_fields(value))
            if header.get(1, 1) != 1 or header.get(2, 0) != 0:
                raise BundleError(f"{path}: only single-shard little-endian checkpoints are supported")
            continue
        name = key.decode("utf-8", errors="replace")
        entries[name] = _entry(name, value)
    return entries


def read_tensors(prefix: str | Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Tensors of the bundle at ``prefix`` (all, or ``names``) as numpy arrays of their stored dtype and shape.

    Each tensor's bytes are checked against the entry's masked CRC-32C; a mismatch raises :class:`BundleError`.
    """
    entries = read_index(prefix)
    wanted = list(entries) if names is None else names
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise BundleError(f"checkpoint {prefix} has no tensor {missing[0]!r}")
    path = Path(f"{prefix}.data-00000-of-00001")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise BundleError(f"cannot read checkpoint data {path}: {err.strerror}") from err
    out = {}
    for name in wanted:
        entry = entries[name]
        dtype = DTYPES.get(entry.dtype)
        if entry.shard_id != 0:
            raise BundleError(f"tensor {name!r} is in shard {entry.shard_id}; only single-shard checkpoints are read")
        if dtype is None:
            raise BundleError(f"tensor {name!r} has unsupported dtype {entry.dtype}")
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.size != count * dtype.itemsize or entry.offset + entry.size > len(data):
            raise BundleError(f"tensor {name!r}: {entry.size} bytes at {entry.offset} do not fit {path.name} "
                              f"or its shape {list(entry.shape)}")
        raw = data[entry.offset:entry.offset + entry.size]
        if mask_crc(crc32c(raw)) != entry.crc32c:
            raise BundleError(f"tensor {name!r} in {path} fails its CRC-32C check (file damaged)")
        out[name] = np.frombuffer(raw, dtype=dtype).reshape(entry.shape).astype(dtype.newbyteorder("="))
    return out

"""Shared audio core: bounded decoding, channel mixing, resampling, level measures and FLAC/WAV encoding.

Every array is float32 shaped ``[C, T]`` (channels first). Decoding never lets a bare exception escape for a bad
file: it raises :class:`AudioError`, whose ``reason`` is one of :data:`REASONS` (machine-readable, stored in tables).
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from n2m.containers import looks_truncated, mp3_has_frame_count
from n2m.storage import write_bytes_atomic

REASONS = (
    "empty",  # zero bytes
    "too_large",  # more bytes than the read limit
    "too_long",  # longer than the duration limit
    "too_short",  # shorter than a caller's minimum (used by the build job)
    "truncated",  # the container promises more audio than the bytes hold
    "unsupported_format",  # no decoder recognises the bytes
    "decode_error",  # recognised but failed while decoding
    "non_finite",  # NaN or infinite samples
    "missing",  # the path or URL does not exist
    "not_a_file",  # a folder, device, FIFO or socket where a regular file was expected
    "fetch_error",  # network or filesystem error while reading
)

AudioSource = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO

_BLOCK_FRAMES = 1 << 16


class AudioError(Exception):
    """A bad audio input. ``reason`` is machine-readable (one of :data:`REASONS`); ``str(err)`` is for people."""

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown audio error reason {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # keep reason across process boundaries (Beam workers pickle exceptions)
        return (AudioError, (self.reason, self.message))


@dataclass(frozen=True)
class Decoded:
    """Decoded audio: ``samples`` float32 ``[C, T]`` in [-1, 1] (not clipped), ``sample_rate`` in Hz.

    ``decoder`` names the decoder that produced the samples; ``note`` says why it was not the first choice (empty
    when it was), e.g. how far libsndfile fell short of the declared end before FFmpeg decoded the whole file.
    """

    samples: np.ndarray
    sample_rate: int
    decoder: str
    note: str = ""

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / float(self.sample_rate)


# ---------------------------------------------------------------------------------------------------------------------
# Reading bytes


def read_bytes(source: str | os.PathLike | BinaryIO, max_bytes: int | None = None) -> bytes:
    """Read a local path or file object, refusing more than ``max_bytes`` (reason ``too_large``).

    A path must name a regular file (reason ``not_a_file`` otherwise): ``/dev/zero`` would be read until memory runs
    out and a FIFO would block forever, and both report a size of 0. The path is opened non-blocking (so a FIFO
    without a writer cannot hang the open) and checked with ``fstat`` on that same descriptor; the cap is applied to
    the bytes read, not to the size the file system reports.
    """
    try:
        if hasattr(source, "read"):
            data = source.read(-1 if max_bytes is None else max_bytes + 1)
        else:
            data = _read_regular_file(Path(source), max_bytes)
    except FileNotFoundError as err:
        raise AudioError("missing", f"no such file: {source}") from err
    except OSError as err:
        raise AudioError("fetch_error", f"cannot read {source}: {err.strerror or err}") from err
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError("too_large", f"input exceeds {max_bytes} bytes")
    return bytes(data)


def _read_regular_file(path: Path, max_bytes: int | None) -> bytes:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
    except OSError:
        os.close(fd)
        raise
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "folder" if stat.S_ISDIR(info.st_mode) else "FIFO" if stat.S_ISFIFO(info.st_mode) else (
            "device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "socket or special file")
        raise AudioError("not_a_file", f"{path} is a {kind}, not a regular file")
    with os.fdopen(fd, "rb") as handle:
        if max_bytes is not None and info.st_size > max_bytes:
            raise AudioError("too_large", f"{path} has {info.st_size} bytes, limit {max_bytes}")
        return handle.read(-1 if max_bytes is None else max_bytes + 1)


# ---------------------------------------------------------------------------------------------------------------------
# Decoding


def decode(
    source: AudioSource,
    *,
    max_bytes: int | None = None,
    max_seconds: float | None = None,
    name: str = "",
) -> Decoded:
    """Decode audio from a path, bytes or a file object.

    soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, aiff) is tried first when its header gives an exact
    length. FFmpeg (PyAV, or the ``ffmpeg`` binary when PyAV is missing) decodes the rest: formats libsndfile does not
    know (m4a/aac, webm, opus-in-mp4, ...), MP3 without a Xing/VBRI frame count (libmpg123 estimates the length from
    the first frame and stops decoding there) and files whose header gives no length (streamed FLAC).

    A file libsndfile decodes to fewer frames than its header declares (Ogg end granule, FLAC STREAMINFO, MP3 frame
    count, WAV data size) is decoded again with FFmpeg before it is called ``truncated``: libsndfile drops audio at
    an Ogg page-sequence gap that FFmpeg reads through. The file fails only when neither decoder reaches the declared
    end; otherwise FFmpeg's (longer) decode is kept and :attr:`Decoded.note` records libsndfile's shortfall.

    Returns float32 ``[C, T]``. Raises :class:`AudioError` for every bad input; ``max_seconds`` is checked against the
    header before any sample is read, so a header claiming hours of audio costs nothing.
    """
    label = name or (str(source) if isinstance(source, str | os.PathLike) else "<bytes>")
    data = source if isinstance(source, bytes | bytearray | memoryview) else read_bytes(source, max_bytes)
    data = bytes(data)
    if len(data) == 0:
        raise AudioError("empty", f"{label}: zero bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise AudioError("too_large", f"{label}: {len(data)} bytes, limit {max_bytes}")
    try:
        decoded = _decode_soundfile(data, max_seconds, label)
    except _NotRecognised:
        decoded = _decode_ffmpeg(data, max_seconds, label)
    except _NoExactLength as why:
        decoded = _decode_ffmpeg(data, max_seconds, label)
        decoded = replace(decoded, note=f"decoded by {decoded.decoder}: {why}")
    except _ShortDecode as short:
        decoded = _second_opinion(data, max_seconds, label, short)
    _check_finite(decoded.samples, label)
    if decoded.samples.shape[1] == 0:
        raise AudioError("empty", f"{label}: no audio frames")
    return decoded


class _NotRecognised(Exception):
    pass


class _NoExactLength(Exception):
    """libsndfile recognises the file but its header gives no exact length (the message says why)."""


class _ShortDecode(Exception):
    """libsndfile's decode cannot be trusted: it gave ``got`` of the ``declared`` frames, or ``problem`` says why."""

    def __init__(self, declared: int, got: int, decoder: str, problem: str = ""):
        problem = problem or (f"stopped {declared - got} frames before the declared end of {declared}")
        super().__init__(f"{decoder} {problem}")
        self.declared, self.got, self.decoder, self.problem = declared, got, decoder, problem


_SF_ERR_UNRECOGNISED_FORMAT = 1
_SF_COUNT_MAX = 0x7FFFFFFFFFFFFFFF  # libsndfile's "length unknown"
_SF_OGG_HOLE = "reports a hole"  # libsndfile's log line when libogg finds a page-sequence gap


def _decode_soundfile(data: bytes, max_seconds: float | None, label: str) -> Decoded:
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except sf.LibsndfileError as err:
        if err.code == _SF_ERR_UNRECOGNISED_FORMAT:
            raise _NotRecognised(str(err)) from err
        reason = "truncated" if looks_truncated(data) else "decode_error"
        raise AudioError(reason, f"{label}: {err.error_string}") from err
    except Exception as err:  # noqa: BLE001 - libsndfile may raise RuntimeError/TypeError for odd headers
        raise _NotRecognised(str(err)) from err
    with handle:
        sr = int(handle.samplerate)
        fmt = handle.format
        decoder = f"soundfile:{fmt.lower()}"
        if sr <= 0:
            raise AudioError("decode_error", f"{label}: invalid sample rate {sr}")
        if looks_truncated(data):
            raise AudioError("truncated", f"{label}: the {fmt} container ends before its declared end")
        declared = handle.frames if handle.seekable() else _SF_COUNT_MAX
        if declared < 0 or declared >= _SF_COUNT_MAX:
            raise _NoExactLength(f"the {fmt} header declares no length")
        if fmt == "MP3" and not mp3_has_frame_count(data):
            raise _NoExactLength("the MP3 has no Xing/VBRI frame count, and libmpg123 stops at its estimate")
        if max_seconds is not None and declared / sr > max_seconds:
            raise AudioError("too_long", f"{label}: {declared / sr:.1f} s, limit {max_seconds:g} s")
        blocks: list[np.ndarray] = []
        total = 0
        try:
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                blocks.append(block)
                total += block.shape[0]
        except Exception as err:  # noqa: BLE001 - LibsndfileError or codec errors mid-stream
            blocks.clear()  # the traceback keeps this frame alive while FFmpeg decodes
            if declared > total:
                raise _ShortDecode(declared, total, decoder, f"stopped after {total} of {declared} frames ({err})") from err
            raise AudioError("decode_error", f"{label}: decoding stopped after {total} frames ({err})") from err
        hole = _SF_OGG_HOLE in handle.extra_info  # libsndfile dropped audio there; soundfile's block seeks hid it
        if total < declared or hole:
            blocks.clear()
            raise _ShortDecode(declared, total, decoder,
                               "ran over a gap in the Ogg page sequence (libogg: hole)" if hole else "")
        channels = handle.channels
    samples = np.concatenate(blocks, axis=0).T if blocks else np.zeros((max(channels, 1), 0), np.float32)
    return Decoded(np.ascontiguousarray(samples, dtype=np.float32), sr, decoder)


def _second_opinion(data: bytes, max_seconds: float | None, label: str, short: _ShortDecode) -> Decoded:
    """libsndfile's decode fell short (or ran over an Ogg hole): decode with FFmpeg, and call the file truncated only
    if FFmpeg does not reach the declared end either."""
    try:
        other = _decode_ffmpeg(data, max_seconds, label)
    except AudioError as err:
        if err.reason == "too_long":
            raise
        raise AudioError("truncated", f"{label}: {short}; FFmpeg: {err.message}") from err
    got = other.samples.shape[1]
    if got < short.declared:
        raise AudioError("truncated", f"{label}: {short}; {other.decoder} decoded {got} of {short.declared} frames")
    return replace(other, note=f"decoded by {other.decoder}: {short}")


def _decode_ffmpeg(data: bytes, max_seconds: float | None, label: str) -> Decoded:
    from n2m.ffmpeg import decode_ffmpeg  # imported here: n2m.ffmpeg needs this module's types

    return decode_ffmpeg(data, max_seconds, label)


def _check_finite(samples: np.ndarray, label: str) -> None:
    if not np.isfinite(samples).all():
        bad = int((~np.isfinite(samples)).sum())
        raise AudioError("non_finite", f"{label}: {bad} NaN or infinite samples")


def info(source: AudioSource) -> tuple[int, int, float]:
    """``(sample_rate, channels, duration_s)`` from the header alone (soundfile formats), without decoding."""
    data = source if isinstance(source, bytes | bytearray | memoryview) else read_bytes(source)
    try:
        meta = sf.info(io.BytesIO(bytes(data)))
    except Exception as err:  # noqa: BLE001
        raise AudioError("unsupported_format", f"cannot read header: {err}") from err
    return int(meta.samplerate), int(meta.channels), float(meta.duration)


# ---------------------------------------------------------------------------------------------------------------------
# Channels, rate, levels


def to_channels(samples: np.ndarray, channels: int) -> np.ndarray:
    """``[C, T]`` -> ``[channels, T]``: mean downmix to mono, mono duplicated up, first channels kept otherwise."""
    if samples.ndim != 2:
        raise ValueError(f"expected [C, T], got shape {samples.shape}")
    c = samples.shape[0]
    if c == channels:
        return samples
    if channels == 1:
        return samples.mean(axis=0, keepdims=True, dtype=np.float32)
    if c == 1:
        return np.repeat(samples, channels, axis=0)
    if c > channels:
        return samples[:channels]
    raise ValueError(f"cannot make {channels} channels from {c}")


def downmix(samples: np.ndarray) -> np.ndarray:
    """Mean of channels: ``[C, T]`` -> ``[1, T]``."""
    return to_channels(samples, 1)


def resample(samples: np.ndarray, sr_in: int, sr_out: int, quality: str = "HQ") -> np.ndarray:
    """Resample ``[C, T]`` with soxr (HQ by default). Returns float32 ``[C, round(T * sr_out / sr_in)]``."""
    if sr_in == sr_out:
        return np.ascontiguousarray(samples, dtype=np.float32)
    out = soxr.resample(np.ascontiguousarray(samples.T), sr_in, sr_out, quality=quality)  # soxr wants [T, C]
    return np.ascontiguousarray(out.T, dtype=np.float32)


def rms_db(samples: np.ndarray, floor_db: float = -120.0) -> float:
    """RMS level in dBFS over all channels and frames; ``floor_db`` for digital silence."""
    if samples.size == 0:
        return floor_db
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(floor_db, 20.0 * np.log10(rms)) if rms > 0 else floor_db


def peak_db(samples: np.ndarray, floor_db: float = -120.0) -> float:
    """Absolute peak in dBFS; ``floor_db`` for digital silence."""
    if samples.size == 0:
        return floor_db
    peak = float(np.max(np.abs(samples)))
    return max(floor_db, 20.0 * np.log10(peak)) if peak > 0 else floor_db


def pcm_hash(samples: np.ndarray) -> str:
    """SHA-1 of the samples quantised to 16-bit PCM: equal for the same audio in different lossless containers."""
    import hashlib

    pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")  # libsndfile's int16 <-> float scale
    return hashlib.sha1(pcm.tobytes()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------------
# Encoding


def encode(samples: np.ndarray, sample_rate: int, fmt: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    """Encode ``[C, T]`` float audio to bytes (clipped to [-1, 1]). ``fmt``: FLAC, WAV, OGG or MP3 (libsndfile).

    Frames are handed to libsndfile in blocks: given a long signal in one call, libvorbis overflows its stack and kills
    the process (libsndfile issue 1095, python-soundfile issues 396/426; about 70 s at 32 kHz).
    """
    buffer = io.BytesIO()
    kwargs = {} if fmt in ("OGG", "MP3") else {"subtype": subtype}
    with sf.SoundFile(buffer, "w", sample_rate, samples.shape[0], format=fmt, **kwargs) as handle:
        for start in range(0, samples.shape[1], _BLOCK_FRAMES // 2):
            handle.write(np.clip(samples[:, start : start + _BLOCK_FRAMES // 2], -1.0, 1.0).T)
    return buffer.getvalue()


def encode_flac(samples: np.ndarray, sample_rate: int) -> bytes:
    """FLAC PCM_16 bytes of ``[C, T]`` float audio (the shard format)."""
    return encode(samples, sample_rate, "FLAC", "PCM_16")


def write(path: str | os.PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write ``[C, T]`` audio to a file whose suffix picks the format (.wav, .flac, .ogg, .mp3), atomically
    (:func:`n2m.storage.write_bytes_atomic`: a killed run leaves the old file or the new one)."""
    fmt = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG", ".mp3": "MP3"}.get(Path(path).suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot write audio format of {path}")
    write_bytes_atomic(str(path), encode(samples, sample_rate, fmt, subtype))

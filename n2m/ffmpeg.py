"""The FFmpeg decoders behind :func:`n2m.audio.decode`: PyAV (``av``) when installed, else the ``ffmpeg`` and ``ffprobe``
binaries. They read what libsndfile cannot (m4a/AAC, WebM/Opus, MP3 without a frame count) and give a second opinion
when libsndfile decodes a file short of its declared length. Both return :class:`n2m.audio.Decoded` ``[C, T]`` float32
and raise :class:`n2m.audio.AudioError` with a machine-readable reason.
"""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np

from n2m.audio import AudioError, Decoded


def decode_ffmpeg(data: bytes, max_seconds: float | None, label: str) -> Decoded:
    """Decode ``data`` with FFmpeg: through PyAV when it is installed, else the ``ffmpeg``/``ffprobe`` binaries."""
    try:
        import av  # noqa: F401
    except ImportError:
        if shutil.which("ffmpeg"):
            return _decode_ffmpeg_binary(data, max_seconds, label)
        raise AudioError("unsupported_format", f"{label}: not a format libsndfile reads and FFmpeg is unavailable") from None
    return _decode_pyav(data, max_seconds, label)


def _decode_pyav(data: bytes, max_seconds: float | None, label: str) -> Decoded:
    import av

    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError, OSError) as err:
        raise AudioError("unsupported_format", f"{label}: unrecognised audio container ({err})") from err
    with container:
        streams = [s for s in container.streams if s.type == "audio"]
        if not streams:
            raise AudioError("unsupported_format", f"{label}: container has no audio stream")
        stream = streams[0]
        sr = int(stream.rate or stream.codec_context.sample_rate or 0)
        if sr <= 0:
            raise AudioError("decode_error", f"{label}: audio stream without a sample rate")
        if max_seconds is not None and stream.duration and stream.time_base:
            claimed_s = float(stream.duration * stream.time_base)
            if claimed_s > max_seconds:
                raise AudioError("too_long", f"{label}: {claimed_s:.1f} s, limit {max_seconds:g} s")
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
        chunks: list[np.ndarray] = []
        total = 0
        limit = None if max_seconds is None else int(max_seconds * sr) + 1
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()  # [C, n] (planar float)
                    chunks.append(arr)
                    total += arr.shape[1]
                if limit is not None and total > limit:
                    raise AudioError("too_long", f"{label}: longer than the limit of {max_seconds:g} s")
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except AudioError:
            raise
        except (av.FFmpegError, ValueError, OSError) as err:
            if not chunks:
                raise AudioError("decode_error", f"{label}: {err}") from err
            raise AudioError("truncated", f"{label}: decoding stopped after {total / sr:.2f} s ({err})") from err
    if not chunks:
        raise AudioError("empty", f"{label}: audio stream holds no frames")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    return Decoded(np.ascontiguousarray(samples), sr, f"pyav:{container.format.name}")


def _decode_ffmpeg_binary(data: bytes, max_seconds: float | None, label: str) -> Decoded:
    probe = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", "pipe:0", "-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"],
        input=data,
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0 or not probe.stdout:
        raise AudioError("unsupported_format", f"{label}: ffmpeg cannot decode ({probe.stderr.decode()[-200:].strip()})")
    info = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=sample_rate,channels", "-of", "csv=p=0", "-i", "pipe:0"],
        input=data,
        capture_output=True,
        check=False,
        text=False,
    )
    try:
        sr_text, ch_text = info.stdout.decode().strip().splitlines()[0].split(",")[:2]
        sr, channels = int(sr_text), int(ch_text)
    except (ValueError, IndexError) as err:
        raise AudioError("decode_error", f"{label}: ffprobe gave no stream info") from err
    flat = np.frombuffer(probe.stdout, dtype="<f4")
    samples = flat[: len(flat) // channels * channels].reshape(-1, channels).T
    if max_seconds is not None and samples.shape[1] / sr > max_seconds:
        raise AudioError("too_long", f"{label}: {samples.shape[1] / sr:.1f} s, limit {max_seconds:g} s")
    return Decoded(np.ascontiguousarray(samples, dtype=np.float32), sr, "ffmpeg")

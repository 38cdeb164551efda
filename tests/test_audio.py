"""The shared audio core against bad inputs (each gives its typed reason) and a lossless round trip."""

import io
import os
import struct

import av
import numpy as np
import pytest
import soundfile as sf

from n2m import audio, containers

SR = 24000


@pytest.fixture(scope="module")
def tone() -> np.ndarray:
    t = np.arange(SR * 3) / SR
    left = 0.3 * np.sin(2 * np.pi * 440 * t)
    right = 0.2 * np.sin(2 * np.pi * 660 * t)
    return np.stack([left, right]).astype(np.float32)  # [2, T]


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_decodes_every_libsndfile_format(tone, fmt):
    decoded = audio.decode(audio.encode(tone, SR, fmt))
    assert decoded.sample_rate == SR
    assert decoded.samples.dtype == np.float32 and decoded.samples.shape[0] == 2
    assert abs(decoded.samples.shape[1] - tone.shape[1]) < SR * 0.1


def _aac_in_mp4(x: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=SR)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(x[:1].astype(np.float32), format="fltp", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


def test_ffmpeg_fallback_decodes_aac_in_mp4(tone):
    decoded = audio.decode(_aac_in_mp4(tone))
    assert decoded.decoder.startswith("pyav")
    assert decoded.sample_rate == SR
    # AAC adds encoder priming; the 440 Hz tone must still dominate the spectrum
    spectrum = np.abs(np.fft.rfft(decoded.samples[0]))
    assert abs(np.argmax(spectrum) * SR / decoded.samples.shape[1] - 440) < 5


def test_path_and_file_object_inputs(tmp_path, tone):
    path = tmp_path / "a.flac"
    audio.write(path, tone, SR)
    from_path = audio.decode(path)
    with open(path, "rb") as handle:
        from_handle = audio.decode(handle)
    np.testing.assert_array_equal(from_path.samples, from_handle.samples)


def _wav_claiming_hours(tone: np.ndarray) -> bytes:
    data = bytearray(audio.encode(tone, SR, "WAV"))
    at = data.find(b"data")
    struct.pack_into("<I", data, at + 4, 0xFFFFFF00)  # ~4 GB of PCM = hours of audio
    struct.pack_into("<I", data, 4, 0xFFFFFFF0)
    return bytes(data)


def _bad_inputs(tone):
    flac = audio.encode(tone, SR, "FLAC")
    ogg = audio.encode(tone, SR, "OGG")
    nan = tone.copy()
    nan[0, 100] = np.nan
    nan_wav = io.BytesIO()
    sf.write(nan_wav, nan.T, SR, format="WAV", subtype="FLOAT")
    mkv = _aac_in_mp4(tone)
    return {
        "zero_bytes": (b"", "empty"),
        "truncated_flac": (flac[: len(flac) // 2], "truncated"),
        "truncated_ogg": (ogg[: len(ogg) // 2], "truncated"),
        "truncated_ogg_early": (ogg[: len(ogg) // 5], "truncated"),
        "random_bytes_mp3": (np.random.default_rng(0).bytes(4096), "unsupported_format"),
        "text_as_wav": (b"this is not audio, just a text file\n" * 40, "unsupported_format"),
        "wav_header_claims_hours": (_wav_claiming_hours(tone), "truncated"),
        "nan_samples": (nan_wav.getvalue(), "non_finite"),
        "unsupported_container": (b"PK\x03\x04" + mkv[4:200], "unsupported_format"),
    }


@pytest.mark.parametrize(
    "case",
    ["zero_bytes", "truncated_flac", "truncated_ogg", "truncated_ogg_early", "random_bytes_mp3", "text_as_wav",
     "wav_header_claims_hours", "nan_samples", "unsupported_container"],
)
def test_bad_input_gives_typed_reason(tmp_path, tone, case):
    data, reason = _bad_inputs(tone)[case]
    suffix = {"random_bytes_mp3": ".mp3", "text_as_wav": ".wav"}.get(case, ".bin")
    path = tmp_path / f"{case}{suffix}"
    path.write_bytes(data)
    with pytest.raises(audio.AudioError) as caught:
        audio.decode(path)
    assert caught.value.reason == reason, str(caught.value)


def test_limits_are_enforced_before_decoding(tmp_path, tone):
    path = tmp_path / "a.wav"
    audio.write(path, tone, SR)
    with pytest.raises(audio.AudioError) as too_long:
        audio.decode(path, max_seconds=1.0)
    assert too_long.value.reason == "too_long"
    with pytest.raises(audio.AudioError) as too_large:
        audio.decode(path, max_bytes=100)
    assert too_large.value.reason == "too_large"
    with pytest.raises(audio.AudioError) as missing:
        audio.decode(tmp_path / "nope.wav")
    assert missing.value.reason == "missing"


def test_audio_error_survives_pickling():
    import pickle

    err = pickle.loads(pickle.dumps(audio.AudioError("truncated", "x: cut")))
    assert err.reason == "truncated" and str(err) == "x: cut"


def test_round_trip_decode_resample_flac_decode(tone):
    source = audio.decode(audio.encode(tone, 44100, "WAV", "FLOAT"))  # float WAV: exact
    mono = audio.downmix(source.samples)
    np.testing.assert_allclose(mono[0], tone.mean(axis=0), atol=1e-7)
    resampled = audio.resample(mono, 44100, SR)
    assert resampled.shape == (1, round(tone.shape[1] * SR / 44100))
    back = audio.decode(audio.encode_flac(resampled, SR))
    assert back.sample_rate == SR
    # PCM_16 quantisation bounds the FLAC round trip error by half an LSB
    assert np.max(np.abs(back.samples - np.clip(resampled, -1, 1))) <= 0.5 / 32767 + 1e-6


def test_resample_preserves_a_tone_in_band():
    t = np.arange(48000) / 48000
    x = np.sin(2 * np.pi * 1000 * t).astype(np.float32)[None]
    y = audio.resample(x, 48000, 16000)
    ref = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    # soxr HQ is linear phase with its delay compensated: the mid section matches the ideal tone
    assert np.max(np.abs(y[0, 1000:-1000] - ref[1000:-1000])) < 1e-3


def test_levels_against_closed_form():
    x = np.full((1, 1000), 0.5, np.float32)
    assert audio.rms_db(x) == pytest.approx(20 * np.log10(0.5))
    sine = np.sin(2 * np.pi * np.arange(48000) / 48).astype(np.float32)[None]
    assert audio.rms_db(sine) == pytest.approx(20 * np.log10(1 / np.sqrt(2)), abs=1e-3)
    assert audio.peak_db(0.25 * sine) == pytest.approx(20 * np.log10(0.25), abs=1e-3)
    assert audio.rms_db(np.zeros((1, 10), np.float32)) == -120.0


def test_channel_mapping():
    stereo = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    assert audio.to_channels(stereo, 1).tolist() == [[0.5, 0.5]]
    assert audio.to_channels(stereo[:1], 2).shape == (2, 2)


def test_pcm_hash_is_container_independent(tone):
    pcm = np.round(tone.T * 32767).astype(np.int16)  # the same 16-bit PCM stored in two lossless containers
    encoded = {}
    for fmt in ("FLAC", "WAV"):
        buffer = io.BytesIO()
        sf.write(buffer, pcm, SR, format=fmt, subtype="PCM_16")
        encoded[fmt] = audio.decode(buffer.getvalue()).samples
    assert audio.pcm_hash(encoded["FLAC"]) == audio.pcm_hash(encoded["WAV"])
    assert audio.pcm_hash(encoded["FLAC"]) != audio.pcm_hash(encoded["FLAC"] * 0.5)


def test_long_ogg_encodes_without_crashing():
    # one-call libvorbis encoding of ~70 s at 32 kHz overflows its stack; encode() feeds blocks instead
    t = np.arange(32000 * 90) / 32000
    x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[None]
    decoded = audio.decode(audio.encode(x, 32000, "OGG"))
    assert abs(decoded.duration_s - 90.0) < 0.1


# ---------------------------------------------------------------------------------------------------------------------
# Declared lengths: which decoder can vouch for the end of a file (issue 14, item 0)

_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)


def _mp3_frames(data: bytes, sr: int) -> list[tuple[int, int]]:
    """(offset, length) of every frame of an MPEG-1 Layer III stream without tags: length = 144 * bitrate / sr +
    padding bit (ISO/IEC 11172-3, 2.4.3.1)."""
    frames, pos = [], 0
    while pos + 4 <= len(data):
        assert data[pos] == 0xFF and data[pos + 1] & 0xE0 == 0xE0, f"no frame sync at {pos}"
        length = 144000 * _MPEG1_L3_KBPS[data[pos + 2] >> 4] // sr + ((data[pos + 2] >> 1) & 1)
        frames.append((pos, length))
        pos += length
    return frames


@pytest.fixture(scope="module")
def song() -> tuple[np.ndarray, int]:
    """6 s of mono tone plus noise at 44.1 kHz (MPEG-1 Layer III when encoded as MP3)."""
    sr = 44100
    t = np.arange(6 * sr) / sr
    noise = np.random.default_rng(1).standard_normal(t.shape)
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * noise).astype(np.float32)[None], sr


def test_mp3_frame_count_is_exact_so_a_short_decode_is_truncated(song):
    x, sr = song
    mp3 = audio.encode(x, sr, "MP3")  # LAME writes a Xing/Info frame with the frame count and gapless trims
    assert audio.decode(mp3).samples.shape[1] == x.shape[1]
    frames = _mp3_frames(mp3, sr)
    cut = mp3[: frames[-3][0]]  # the last three frames gone: under 2% of the audio, which an estimate would forgive
    with pytest.raises(audio.AudioError) as caught:
        audio.decode(cut)
    assert caught.value.reason == "truncated" and "pyav" in str(caught.value)


def test_mp3_without_frame_count_is_decoded_to_its_last_frame(song):
    x, sr = song
    mp3 = audio.encode(x, sr, "MP3")
    frames = _mp3_frames(mp3, sr)
    bare = mp3[frames[1][0]:]  # without the Xing/Info frame, libmpg123 estimates the length from the first frame
    decoded = audio.decode(bare)
    assert decoded.samples.shape[1] == 1152 * (len(frames) - 1)  # 1152 samples per Layer III frame, none trimmed
    assert decoded.decoder.startswith("pyav") and "frame count" in decoded.note


def test_flac_without_declared_length_decodes_whole(song):
    x, sr = song
    flac = audio.encode(x, sr, "FLAC")
    streamed = bytearray(flac)
    # STREAMINFO (FLAC format: 'fLaC', 4-byte block header, then the block): total samples is 36 bits, from the low
    # nibble of byte 21 through byte 25; 0 means unknown, as a streaming encoder writes it
    streamed[21] &= 0xF0
    streamed[22:26] = bytes(4)
    decoded = audio.decode(bytes(streamed), max_seconds=10.0)
    np.testing.assert_array_equal(decoded.samples, audio.decode(flac).samples)  # lossless: bit-identical
    assert "declares no length" in decoded.note


@pytest.mark.timeout(30)
def test_read_bytes_refuses_what_is_not_a_regular_file(tmp_path):
    """A FIFO would block forever and /dev/zero never ends; both report a size of 0 (issue 14, item 7)."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, "/dev/zero"):
        with pytest.raises(audio.AudioError) as caught:
            audio.read_bytes(path, max_bytes=1 << 20)
        assert caught.value.reason == "not_a_file", path
    with pytest.raises(audio.AudioError) as caught:
        audio.decode(fifo)
    assert caught.value.reason == "not_a_file"


# ---------------------------------------------------------------------------------------------------------------------
# Container header checks (n2m.containers), on bytes laid out by hand


def _wav(chunks: list[tuple[bytes, bytes]], declared: dict[bytes, int] | None = None) -> bytes:
    """A RIFF/WAVE file of ``(id, body)`` chunks, each padded to an even length; ``declared`` overrides a size field."""
    body = b"WAVE"
    for cid, data in chunks:
        size = (declared or {}).get(cid, len(data))
        body += cid + struct.pack("<I", size) + data + b"\0" * (len(data) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_wav_data_chunk_checks():
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)  # PCM, mono, 8 kHz, 16-bit
    pcm = bytes(range(200))
    whole = _wav([(b"fmt ", fmt), (b"LIST", b"odd"), (b"data", pcm)])  # a 3-byte chunk is followed by a pad byte
    assert sf.info(io.BytesIO(whole)).frames == 100  # libsndfile reads the same layout
    assert not containers.looks_truncated(whole)
    assert containers.looks_truncated(whole[:-1])  # one byte of PCM missing
    assert containers.looks_truncated(_wav([(b"fmt ", fmt), (b"data", pcm)], {b"data": 202}))
    assert not containers.looks_truncated(_wav([(b"fmt ", fmt), (b"data", pcm)], {b"data": 0xFFFFFFFF}))  # streamed
    assert containers.looks_truncated(_wav([(b"fmt ", fmt)]))  # no data chunk at all
    assert not containers.looks_truncated(b"fLaC" + bytes(40))  # other formats are not judged here


def test_ogg_last_page_checks(tone):
    ogg = audio.encode(tone, SR, "OGG")
    last = ogg.rfind(b"OggS")
    assert not containers.looks_truncated(ogg)
    assert containers.looks_truncated(ogg[:-1])  # the last page's body is one byte short
    assert containers.looks_truncated(ogg[: last + 20])  # the last page's header is cut
    no_eos = bytearray(ogg)
    no_eos[last + 5] &= ~0x04 & 0xFF  # header_type without "end of stream" (RFC 3533 section 6)
    assert containers.looks_truncated(bytes(no_eos))


def test_mp3_frame_count_headers(song):
    x, sr = song
    mp3 = audio.encode(x, sr, "MP3")
    tag = max(mp3.find(b"Xing"), mp3.find(b"Info"))
    assert tag == 4 + 17  # MPEG-1 mono: after the 4-byte frame header and 17 bytes of side information
    assert containers.mp3_has_frame_count(mp3)
    synchsafe = bytes([0, 0, 2, 44])  # 300 = 2 * 128 + 44, seven bits per byte
    id3 = b"ID3" + bytes([4, 0, 0x10]) + synchsafe + bytes(300) + b"3DI" + bytes(7)  # flag 0x10: a 10-byte footer
    assert containers.mp3_has_frame_count(id3 + mp3)
    assert not containers.mp3_has_frame_count(id3[:-10] + mp3)  # footer flag set but no footer: no frame sync
    unflagged = bytearray(mp3)
    unflagged[tag + 7] &= 0xFE  # flags are big-endian: bit 0 of the last byte is "frames present"
    assert not containers.mp3_has_frame_count(bytes(unflagged))
    bare = mp3[_mp3_frames(mp3, sr)[1][0]:]
    assert not containers.mp3_has_frame_count(bare)
    vbri = bytearray(bare)
    vbri[4 + 32 : 4 + 36] = b"VBRI"  # Fraunhofer's tag: 32 bytes after the frame header
    assert containers.mp3_has_frame_count(bytes(vbri))
    assert not containers.mp3_has_frame_count(b"ID3")

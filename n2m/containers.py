"""Container header checks that :func:`n2m.audio.decode` makes before trusting libsndfile with a file's length.

libsndfile papers over some damage and reports some lengths as exact when they are estimates. These checks read the
container bytes directly (no decoding):

- :func:`looks_truncated`: a WAV whose ``data`` chunk declares more bytes than follow it (libsndfile silently clamps),
  an Ogg stream whose last page lacks the end-of-stream flag or whose segment table promises more body bytes than
  remain (RFC 3533).
- :func:`mp3_has_frame_count`: whether an MP3's first frame carries a Xing/Info frame count or a VBRI header; without
  one, libmpg123 estimates the length from the first frame and stops decoding there.
"""

from __future__ import annotations

_WAV_UNKNOWN_SIZE = 0xFFFFFFFF  # a streaming writer's "size not known" data chunk
_OGG_HEADER = 27  # bytes of an Ogg page header before its segment table (RFC 3533 section 6)
_OGG_EOS = 0x04  # header_type bit: last page of the logical stream


def looks_truncated(data: bytes) -> bool:
    """Whether a WAV or Ogg container ends before its own headers say it does (``False`` for other formats)."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _wav_truncated(data)
    if data[:4] == b"OggS":
        return _ogg_truncated(data)
    return False


def _wav_truncated(data: bytes) -> bool:
    """RIFF chunks from byte 12: 4-byte id, 4-byte little-endian size, body padded to an even length. Truncated when
    the ``data`` chunk declares more bytes than follow it, or the bytes run out before a ``data`` chunk."""
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data":
            return size != _WAV_UNKNOWN_SIZE and size > len(data) - pos - 8
        pos += 8 + size + (size & 1)
    return True


def _ogg_truncated(data: bytes) -> bool:
    """The last page (RFC 3533 section 6: header_type at byte 5, segment count at 26, lacing values from 27) must be
    flagged end-of-stream and hold the body bytes its lacing values add up to."""
    last = data.rfind(b"OggS")
    if last + _OGG_HEADER > len(data) or not data[last + 5] & _OGG_EOS:
        return True
    segments = data[last + 26]
    lacing = data[last + _OGG_HEADER : last + _OGG_HEADER + segments]
    return len(lacing) < segments or last + _OGG_HEADER + segments + sum(lacing) > len(data)


def mp3_has_frame_count(data: bytes) -> bool:
    """Whether the first MPEG audio frame (after an ID3v2 tag) is a Xing/Info header with its frame-count flag, or a
    VBRI header: only then is the length in the header exact.

    Layout (the LAME project's Xing/Info description, Fraunhofer's VBRI): the Xing tag follows the 4-byte frame header
    and the side information (MPEG-1: 32 bytes, 17 mono; MPEG-2/2.5: 17, 9 mono) and its big-endian flags have bit 0
    for "frames present"; a VBRI tag sits 32 bytes after the frame header.
    """
    pos = _id3v2_size(data)
    header = data[pos : pos + 4]
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return False
    mpeg1, mono = (header[1] >> 3) & 3 == 3, header[3] >> 6 == 3
    tag = pos + 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))
    if data[tag : tag + 4] in (b"Xing", b"Info"):
        return bool(int.from_bytes(data[tag + 4 : tag + 8], "big") & 1)
    return data[pos + 36 : pos + 40] == b"VBRI"


def _id3v2_size(data: bytes) -> int:
    """Bytes of a leading ID3v2 tag (0 without one): ``ID3``, version, flags, then the body size as four 7-bit bytes
    (synchsafe), plus 10 for the header and 10 more with a footer (flag 0x10)."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    return 10 + sum((data[6 + i] & 0x7F) << (7 * (3 - i)) for i in range(4)) + (10 if data[5] & 0x10 else 0)

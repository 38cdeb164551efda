"""User-given names that become file or folder names: label sets, runs, reports, prompt ids.

A name is one path component and nothing else, so that ``labels/{name}/`` or ``{out}/{id}.wav`` always stays inside
its parent folder: not empty, not ``.`` or ``..``, no leading dot (hidden names are reserved for work folders such as a
label set being rebuilt), no path separator (``/`` or ``\\``), no NUL or other control character, at most
:data:`MAX_BYTES` bytes of UTF-8 (the usual file-name limit, leaving room for a suffix).
"""

from __future__ import annotations

from n2m.errors import UserError

MAX_BYTES = 200


def check_name(value: object, what: str) -> str:
    """``value`` if it is a safe single path component, else a one-line :class:`UserError` naming ``what``."""
    if not isinstance(value, str):
        raise UserError(f"{what} must be text, got {type(value).__name__} {value!r}")
    problem = _problem(value)
    if problem:
        raise UserError(f"{what} {value!r} cannot name a file or folder: {problem}")
    return value


def _problem(value: str) -> str:
    if not value.strip():
        return "it is empty"
    if value in (".", ".."):
        return "'.' and '..' are not names"
    if value.startswith("."):
        return "it starts with a dot (reserved for hidden work folders)"
    if "/" in value or "\\" in value:
        return "it holds a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return "it holds a control character (NUL, newline, tab, ...)"
    if value != value.strip():
        return "it starts or ends with white space"
    if len(value.encode("utf-8")) > MAX_BYTES:
        return f"it is longer than {MAX_BYTES} bytes"
    return ""

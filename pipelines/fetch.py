"""Reading a source's bytes: local paths, http(s) with timeouts/retries/backoff/size cap, and fsspec URIs.

``fetch(uri, settings)`` returns the bytes or raises :class:`FetchError` (or ``n2m.audio.AudioError`` for local files)
whose ``reason`` is machine-readable. Concurrency is bounded by the caller (``n2m.pipelines.job`` keeps at most
``--fetch-concurrency`` reads in flight per worker). Schemes are a registry: ``FETCHERS[scheme] -> fetcher``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from n2m.audio import read_bytes

FETCH_REASONS = (
    "missing",  # 404/410, or no such object
    "timeout",  # no answer within --fetch-timeout after every retry, or not read within --fetch-deadline
    "too_large",  # more than --max-source-mb
    "http_error",  # another 4xx answer (not retried)
    "fetch_error",  # connection or server errors (5xx, 429) after every retry
    "unsupported_scheme",  # a URI scheme with no fetcher and no installed fsspec backend
)
_RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16


class FetchError(Exception):
    """A source whose bytes could not be read; ``reason`` is one of :data:`FETCH_REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __reduce__(self):  # keep the reason across process boundaries
        return (FetchError, (self.reason, self.message))


class _Retryable(Exception):
    def __init__(self, error: FetchError):
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True)
class FetchSettings:
    """``timeout_s``: connect and per-read timeout; ``retries``: extra attempts for transient errors, waiting
    ``backoff_s * 2**attempt`` between them; ``max_bytes``: size cap (checked on Content-Length and while streaming);
    ``deadline_s``: the whole read of one source, every attempt and wait included (a server trickling bytes never
    trips the per-read timeout)."""

    max_bytes: int = 512 << 20
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0
    deadline_s: float = 600.0


class _Deadline:
    """The monotonic time by which a source must be read."""

    def __init__(self, uri: str, seconds: float):
        self.uri, self.seconds, self.at = uri, seconds, time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self, got: int) -> None:
        if self.left() < 0:
            raise FetchError("timeout", f"{self.uri}: not read within --fetch-deadline {self.seconds:g} s "
                                        f"({got} bytes arrived)")


def _with_retries(uri: str, settings: FetchSettings, deadline: _Deadline,
                  attempt_once: Callable[[], bytes]) -> bytes:
    """Call ``attempt_once`` until it succeeds, raises a final error, or the retries or the deadline run out."""
    last: FetchError | None = None
    for attempt in range(settings.retries + 1):
        try:
            return attempt_once()
        except _Retryable as err:
            last = err.error
        wait = settings.backoff_s * 2**attempt
        if attempt == settings.retries or wait >= deadline.left():
            break
        time.sleep(wait)
    assert last is not None
    tried = attempt + 1
    cut = " before --fetch-deadline" if tried <= settings.retries else ""
    raise FetchError(last.reason, f"{last.message} (after {tried} attempt{'s' * (tried > 1)}{cut})")


# ---------------------------------------------------------------------------------------------------------------------
# Fetchers


def fetch_local(uri: str, settings: FetchSettings) -> bytes:
    """A local path (raises ``AudioError`` missing / too_large / fetch_error)."""
    return read_bytes(uri, settings.max_bytes)


_local = threading.local()


def _session():
    import requests

    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.headers["User-Agent"] = "n2m-build"
    return _local.session


def fetch_http(uri: str, settings: FetchSettings) -> bytes:
    """GET ``uri``; 404/410 -> missing, other 4xx -> http_error, timeouts/5xx/429/connection errors retried.

    The body is read with ``read1`` (what one socket read gives) so that the deadline is checked after every read
    even when a server sends a byte at a time; a stalled read still waits up to the per-read timeout.
    """
    import requests
    from urllib3.exceptions import HTTPError as Urllib3Error
    from urllib3.exceptions import ReadTimeoutError

    deadline = _Deadline(uri, settings.deadline_s)

    def once() -> bytes:
        timeout = max(0.001, min(settings.timeout_s, deadline.left()))
        try:
            with _session().get(uri, stream=True, timeout=(timeout, timeout)) as response:
                code = response.status_code
                if code in (404, 410):
                    raise FetchError("missing", f"{uri}: HTTP {code}")
                if code in _RETRY_STATUS:
                    raise _Retryable(FetchError("fetch_error", f"{uri}: HTTP {code}"))
                if code >= 400:
                    raise FetchError("http_error", f"{uri}: HTTP {code}")
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > settings.max_bytes:
                    raise FetchError("too_large", f"{uri}: {declared} bytes, limit {settings.max_bytes}")
                body = bytearray()
                while chunk := response.raw.read1(_CHUNK, decode_content=True):
                    body += chunk
                    if len(body) > settings.max_bytes:
                        raise FetchError("too_large", f"{uri}: more than {settings.max_bytes} bytes")
                    deadline.check(len(body))
                return bytes(body)
        except (requests.Timeout, ReadTimeoutError) as err:
            raise _Retryable(FetchError("timeout", f"{uri}: no answer within {timeout:g} s")) from err
        except requests.ConnectionError as err:
            if any(isinstance(arg, ReadTimeoutError) for arg in err.args):
                raise _Retryable(FetchError("timeout", f"{uri}: stalled for {timeout:g} s")) from err
            raise _Retryable(FetchError("fetch_error", f"{uri}: {type(err).__name__}")) from err
        except (requests.RequestException, Urllib3Error) as err:
            raise _Retryable(FetchError("fetch_error", f"{uri}: {type(err).__name__}: {err}")) from err

    return _with_retries(uri, settings, deadline, once)


def fetch_fsspec(uri: str, settings: FetchSettings) -> bytes:
    """Any scheme fsspec has an installed backend for (s3://, gs://, az://, hf://, ...)."""
    import fsspec

    scheme = urlsplit(uri).scheme.lower()
    try:
        fs_class = fsspec.get_filesystem_class(scheme)
    except (ValueError, ImportError) as err:
        raise FetchError("unsupported_scheme", f"{uri}: no reader for {scheme}:// ({err})") from err
    deadline = _Deadline(uri, settings.deadline_s)

    def once() -> bytes:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            assert isinstance(fs, fs_class)
            size = fs.size(path)
            if size is not None and size > settings.max_bytes:
                raise FetchError("too_large", f"{uri}: {size} bytes, limit {settings.max_bytes}")
            data = bytearray()
            with fs.open(path, "rb") as handle:
                while len(data) <= settings.max_bytes and (block := handle.read(_CHUNK * 16)):
                    data += block
                    deadline.check(len(data))
        except FileNotFoundError as err:
            raise FetchError("missing", f"{uri}: no such object") from err
        except (OSError, TimeoutError) as err:
            raise _Retryable(FetchError("fetch_error", f"{uri}: {err}")) from err
        if len(data) > settings.max_bytes:
            raise FetchError("too_large", f"{uri}: more than {settings.max_bytes} bytes")
        return bytes(data)

    return _with_retries(uri, settings, deadline, once)


FETCHERS: dict[str, Callable[[str, FetchSettings], bytes]] = {
    "": fetch_local,
    "file": fetch_local,
    "http": fetch_http,
    "https": fetch_http,
}


def fetch(uri: str, settings: FetchSettings) -> bytes:
    """The bytes of a canonical source URI (see ``n2m.pipelines.sources.canonical_uri``)."""
    scheme = urlsplit(uri).scheme.lower()
    fetcher = FETCHERS.get("" if len(scheme) <= 1 else scheme, fetch_fsspec)
    return fetcher(uri, settings)

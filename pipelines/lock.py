"""One build at a time per OUT: ``OUT/build.lock`` names its holder (pid, host, start time) while a build runs.

Two builds writing one OUT would race on plan files, staged chunks and the tables. The lock is created exclusively
(``O_CREAT | O_EXCL`` on a local OUT); a second build is refused with the holder's name. A lock whose holder is a
process of this host that no longer exists (a build killed by SIGKILL) is taken over. On an fsspec OUT (gs://,
s3://) there is no exclusive create: the lock is checked, then written, which still stops a build started after
another has begun.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

from n2m.errors import UserError
from n2m.layout import BuildLayout
from n2m.provenance import now_iso
from n2m.storage import Store


def _holder_gone(holder: dict[str, Any]) -> bool:
    """True when the holder is a process of this host that has exited."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def _read_holder(store: Store, path: str) -> dict[str, Any]:
    try:
        return store.read_json(path)
    except (OSError, ValueError):
        return {}  # half-written or vanished: treated as held (never taken over blindly)


def _create(store: Store, path: str, body: bytes) -> bool:
    """Create the lock file; False when it exists."""
    if not store.local:
        if store.exists(path):
            return False
        store.write_bytes(path, body)
        return True
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(body)
    return True


@contextlib.contextmanager
def build_lock(out: str) -> Iterator[str]:
    """Hold ``OUT/build.lock`` for the duration of a build; yields its path. A local OUT this call created is removed
    again if the build left it empty (a refused input).

    Raises UserError when OUT cannot be written (a file, a read-only folder) or another live build holds the lock.
    """
    store = Store(out)
    path = BuildLayout(out).lock
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_iso()}
    new_folder = store.local and not os.path.exists(out)
    try:
        store.makedirs(out)
        created = _create(store, path, json.dumps(me).encode())
        if not created and _holder_gone(_read_holder(store, path)):
            store.remove(path)
            created = _create(store, path, json.dumps(me).encode())
    except OSError as err:
        raise UserError(f"cannot write to --out {out}: {err.strerror or err}") from err
    if not created:
        holder = _read_holder(store, path)
        who = (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}" if holder
               else "another build")
        raise UserError(f"{out} is being built by {who}; wait for it to finish, or delete {path} if that build "
                        "is gone")
    try:
        yield path
    finally:
        if _read_holder(store, path) == me:
            store.remove(path)
        if new_folder:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only when empty

"""Fixtures shared by the core's tests."""

from __future__ import annotations

import uuid

import fsspec
import pytest


@pytest.fixture(params=["local", "memory"])
def storage_root(request, tmp_path):
    """A folder that does not exist yet: under ``tmp_path``, then as a ``memory://`` URI (removed afterwards)."""
    if request.param == "local":
        yield str(tmp_path / "root")
        return
    uri = f"memory://n2m-test-{uuid.uuid4().hex[:8]}/root"
    yield uri
    fs = fsspec.filesystem("memory")
    if fs.exists(uri):
        fs.rm(uri, recursive=True)

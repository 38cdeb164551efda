"""The ``n2m export`` job as a function of its typed settings (:class:`ExportSettings`; the command line is
:mod:`n2m.training.export_cli`): a training checkpoint's EMA weights as safetensors + config.json for inference."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ExportSettings:
    """``checkpoint``: an ``n2m train`` checkpoint; ``out``: the folder for model.safetensors and config.json."""

    checkpoint: str
    out: str


def run_export(settings: ExportSettings) -> int:
    """Export, then load the export back (proof that it rebuilds before anyone relies on it); print a summary."""
    from n2m.training.export import export_checkpoint, load_exported
    from n2m.training.networks.presets import count_parameters

    out = export_checkpoint(settings.checkpoint, settings.out)
    exported = load_exported(out)
    params = count_parameters(exported.config["net"])
    print(f"n2m export: {exported.stage} ({params:,} parameters, EMA weights of step "
          f"{exported.config['source']['global_step']}) -> {out}")
    return 0

"""Training of the Noise2Music cascade (arXiv 2302.03917) on 1D Efficient U-Nets.

Public pieces: :data:`n2m.training.stages.STAGES` (stage registry; a stage is one :class:`n2m.training.stage_spec.StageSpec`),
:mod:`n2m.training.config` (typed run configs), :mod:`n2m.training.networks` (plain networks and presets),
:mod:`n2m.training.diffusion` (schedules, denoiser, augmentation, samplers), :mod:`n2m.training.data` (WebDataset data module),
:mod:`n2m.training.module` (the LightningModule), ``n2m train`` / ``n2m export`` (:mod:`n2m.training.train_cli`,
:mod:`n2m.training.export_cli`), :mod:`n2m.training.export` (checkpoints and exports into models) and
:func:`n2m.training.sampling.generate` for inference.
"""

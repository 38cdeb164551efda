"""Training of the Noise2Music cascade (arXiv 2302.03917) on 1D Efficient U-Nets.

Public pieces: :data:`training.stages.STAGES` (stage registry; a stage is one :class:`training.stage_spec.StageSpec`),
:mod:`training.config` (typed run configs), :mod:`training.networks` (plain networks and presets),
:mod:`training.diffusion` (schedules, denoiser, augmentation, samplers), :mod:`training.data` (WebDataset data module),
:mod:`training.module` (the LightningModule), ``n2m train`` / ``n2m export`` (:mod:`training.train_cli`,
:mod:`training.export_cli`), :mod:`training.export` (checkpoints and exports into models) and
:func:`training.sampling.generate` for inference.
"""

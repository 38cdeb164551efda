"""Diffusion machinery around a plain network: schedules, the denoiser (parametrisation + loss), augmentation."""

"""The denoiser: owns the parametrisation, the loss weighting and classifier-free-guidance dropout around a network.

The network maps ``(x_t, t, conditioning)`` to one signal; what that signal means is the parametrisation's business
(the k-diffusion split: Karras et al. 2022, EDM, section 5; Crowson's k-diffusion ``Denoiser``).

- ``eps`` (Ho et al. 2020; Noise2Music section 3.1): the output is ``eps``; ``x_0 = (x_t - sigma_t eps) / alpha_t``.
- ``v`` (Salimans & Ho 2022, section 4): the output is ``v = alpha_t eps - sigma_t x_0``; then
  ``x_0 = alpha_t x_t - sigma_t v`` and ``eps = sigma_t x_t + alpha_t v``.

Loss: ``w(t) * mean((out - target)^2)`` per example, with ``w = 1`` ("simplified", Ho et al. 2020) or ``w = sigma_t^2``
(Noise2Music's "sigma" weighting, crucial for its spectrogram generator). Time is sampled uniformly in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from n2m.training.diffusion.schedules import Schedule


@dataclass(frozen=True)
class Conditioning:
    """What a network sees besides ``x_t`` and ``t`` (all optional; which ones a network needs is in its config).

    ``text`` ``[B, L, D]`` token states with ``text_mask`` ``[B, L]`` (bool, True = token), ``lowfi`` ``[B, C, T]``,
    ``aug_t`` ``[B]`` (conditioning-augmentation level), ``aligned`` ``[B, C_a, T_a]``, ``joint`` ``[B, D_j]`` (a joint
    audio-text embedding) with ``joint_mask`` ``[B]`` (bool, False = dropped), ``melody`` ``[B, 12, T]``.
    """

    text: torch.Tensor | None = None
    text_mask: torch.Tensor | None = None
    lowfi: torch.Tensor | None = None
    aug_t: torch.Tensor | None = None
    aligned: torch.Tensor | None = None
    joint: torch.Tensor | None = None
    joint_mask: torch.Tensor | None = None
    melody: torch.Tensor | None = None

    def kwargs(self) -> dict[str, torch.Tensor | None]:
        """The network's keyword arguments; the fields this conditioning does not set are left out, so a network
        without them (any callable ``net(x_t, t, **kwargs)``) is called as before they existed."""
        out = {"text": self.text, "text_mask": self.text_mask, "lowfi": self.lowfi, "aug_t": self.aug_t,
               "aligned": self.aligned}
        out.update({k: v for k, v in (("joint", self.joint), ("joint_mask", self.joint_mask),
                                      ("melody", self.melody)) if v is not None})
        return out

    def without_text(self, drop: torch.Tensor) -> Conditioning:
        """Zero the text of the examples where ``drop`` ``[B]`` is True (their mask becomes all False)."""
        if self.text is None or self.text_mask is None:
            return self
        keep = ~drop
        return replace(self, text=self.text * keep[:, None, None].to(self.text.dtype),
                       text_mask=self.text_mask & keep[:, None])

    def without_joint(self, drop: torch.Tensor) -> Conditioning:
        """Zero the joint embedding of the examples where ``drop`` ``[B]`` is True (their mask becomes False)."""
        if self.joint is None or self.joint_mask is None:
            return self
        keep = ~drop
        return replace(self, joint=self.joint * keep[:, None].to(self.joint.dtype), joint_mask=self.joint_mask & keep)


def cfg_dropout(cond: Conditioning, p: float, generator: torch.Generator | None = None) -> tuple[Conditioning, torch.Tensor]:
    """Classifier-free-guidance dropout (Ho & Salimans 2022): drop the text of each example with probability ``p``.

    Returns the conditioning and the ``[B]`` bool mask of dropped examples.
    """
    if cond.text is None or p <= 0.0:
        batch = 0 if cond.text is None else cond.text.shape[0]
        device = None if cond.text is None else cond.text.device
        return cond, torch.zeros(batch, dtype=torch.bool, device=device)
    device = generator.device if generator is not None else cond.text.device
    drop = (torch.rand(cond.text.shape[0], generator=generator, device=device) < p).to(cond.text.device)
    return cond.without_text(drop), drop


def cfg_dropout_pair(batch: int, p_text: float, p_audio: float, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent classifier-free-guidance dropout of two conditions: ``(drop_text [B], drop_audio [B])`` bool masks.

    Each example drops its text with probability ``p_text`` and, independently, its audio with probability ``p_audio``
    (one ``[2, B]`` uniform draw from ``generator``), so a batch holds all four cases: both kept, text only dropped
    (``p_text (1 - p_audio)``), audio only dropped, both dropped (``p_text p_audio``). Double classifier-free guidance
    (:func:`n2m.training.diffusion.guidance.double_classifier_free`) needs the model under "audio only" and "neither";
    MusicGen-Style trains its text + style model this way (Rouard et al. 2024, section 4.3). The masks are on
    ``device`` (default: the generator's).
    """
    for name, p in (("p_text", p_text), ("p_audio", p_audio)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {p}")
    gen_device = generator.device if generator is not None else device
    u = torch.rand(2, batch, generator=generator, device=gen_device)
    target = device if device is not None else u.device
    return (u[0] < p_text).to(target), (u[1] < p_audio).to(target)


def perturb_joint(cond: Conditioning, xi: float, generator: torch.Generator | None = None) -> Conditioning:
    """LAFITE's fixed perturbation of a joint embedding (Zhou et al. 2022, "Towards Language-Free Training for
    Text-to-Image Generation", arXiv 2111.13792, eq. 5): ``h' = h + xi * eps * ||h|| / ||eps||`` with ``eps ~ N(0, I)``,
    then ``h' / ||h'||``, for ``joint`` ``[B, D]``. A stage that trains on the audio embeddings of its clips alone then
    meets a neighbourhood of each, not a point, so a text embedding or a mix of clips (which lie off those points)
    falls where it trained. ``xi = 0`` returns ``cond`` unchanged; the mask and a dropped (zero) embedding are kept."""
    if cond.joint is None or xi <= 0.0:
        return cond
    joint = cond.joint.float()
    device = generator.device if generator is not None else joint.device
    eps = torch.randn(joint.shape, generator=generator, device=device).to(joint.device)
    moved = joint + xi * eps * joint.norm(dim=1, keepdim=True) / eps.norm(dim=1, keepdim=True)
    moved = moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12)
    kept = cond.joint_mask if cond.joint_mask is not None else torch.ones(joint.shape[0], dtype=torch.bool,
                                                                         device=joint.device)
    return replace(cond, joint=torch.where(kept[:, None], moved, joint).to(cond.joint.dtype))


def condition_dropout(cond: Conditioning, p_text: float, p_joint: float,
                      generator: torch.Generator | None = None) -> Conditioning:
    """Classifier-free-guidance dropout of every condition ``cond`` holds: the text with probability ``p_text``
    (:func:`cfg_dropout`) and, when a joint embedding is there, the two independently (:func:`cfg_dropout_pair`: the
    joint embedding with probability ``p_joint``), so a text + audio model learns the "audio only" and "neither" cases
    double guidance needs. The melody and the low-fi signal are never dropped (guidance is over text and audio)."""
    if cond.joint is None:
        return cfg_dropout(cond, p_text, generator)[0]
    drop_text, drop_joint = cfg_dropout_pair(cond.joint.shape[0], p_text if cond.text is not None else 0.0, p_joint,
                                             generator, device=cond.joint.device)
    return cond.without_text(drop_text).without_joint(drop_joint)


# ---------------------------------------------------------------------------------------------------------------------
# Parametrisations: the training target, and (eps, x0) from the network output


@dataclass(frozen=True)
class Parametrisation:
    target: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x0, eps, a, s)
    to_eps_x0: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _eps_to_eps_x0(out, x_t, a, s):
    return out, (x_t - s * out) / a


def _v_to_eps_x0(out, x_t, a, s):
    return s * x_t + a * out, a * x_t - s * out


PARAMETRISATIONS: dict[str, Parametrisation] = {
    "eps": Parametrisation(target=lambda x0, eps, a, s: eps, to_eps_x0=_eps_to_eps_x0),
    "v": Parametrisation(target=lambda x0, eps, a, s: a * eps - s * x0, to_eps_x0=_v_to_eps_x0),
}

WEIGHTINGS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "simplified": lambda alpha, sigma: torch.ones_like(sigma),
    "sigma": lambda alpha, sigma: sigma**2,
}


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, ..., 1]`` broadcastable against ``like``."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1))).to(like.dtype)


@dataclass(frozen=True)
class Prediction:
    """What a denoiser predicts at ``(x_t, t)``: ``eps`` and ``x0``, ``[B, C, T]`` each, related by
    ``x_t = alpha_t x0 + sigma_t eps``. Samplers take both (:mod:`n2m.training.diffusion.samplers`), so the parametrisation
    is converted here only.

    Predictions add, subtract and scale field by field, so guidance (:mod:`n2m.training.diffusion.guidance`) and
    cross-fades (:mod:`n2m.training.windowing`) combine them like tensors. Since ``x0`` is affine in ``eps`` at a fixed
    ``x_t``, a combination whose weights sum to 1 (guidance: ``(1 - w) u + w c``; cross-fade weights) of consistent
    predictions is consistent again.
    """

    eps: torch.Tensor
    x0: torch.Tensor

    def chunk(self, chunks: int, dim: int = 0) -> tuple[Prediction, ...]:
        return tuple(Prediction(e, x) for e, x in zip(self.eps.chunk(chunks, dim), self.x0.chunk(chunks, dim)))

    def __add__(self, other: Prediction) -> Prediction:
        return Prediction(self.eps + other.eps, self.x0 + other.x0)

    def __sub__(self, other: Prediction) -> Prediction:
        return Prediction(self.eps - other.eps, self.x0 - other.x0)

    def __mul__(self, scale: float) -> Prediction:
        return Prediction(self.eps * scale, self.x0 * scale)

    __rmul__ = __mul__


class Denoiser:
    """Wraps a network (any callable ``net(x_t, t, **cond) -> out``) with a schedule, parametrisation and weighting.

    ``data_scale``: the diffusion runs on ``data_scale * x0`` (its "diffusion space"; :meth:`loss` takes ``x0`` in data
    units, :meth:`predict` and the samplers work in the diffusion space, :meth:`to_data` leaves it). A signal whose
    standard deviation is well below the unit noise (n2m's log-mel in [-1, 1] has 0.25) spends most noise levels
    invisible to the network; scaling it to unit deviation is Stable Diffusion's latent scale factor (Rombach et al.
    2022, section 4.3.2) and EDM's ``sigma_data`` (Karras et al. 2022, table 1). 1 keeps the paper's setting.

    ``t_min``: training draws ``t ~ U[t_min, 1]``. A sampler that stops at ``t_stop`` (its last step is the ``x0``
    estimate there) never runs the network below it, so the steps a uniform draw spends on ``[0, t_stop)`` teach it
    nothing it will use; ``t_min = t_stop`` gives them to the levels the sampler visits. 0 keeps the paper's U[0, 1].
    """

    def __init__(self, net: Callable[..., torch.Tensor], schedule: Schedule, parametrisation: str = "eps",
                 weighting: str = "simplified", data_scale: float = 1.0, t_min: float = 0.0):
        if parametrisation not in PARAMETRISATIONS:
            raise KeyError(f"unknown parametrisation {parametrisation!r}; choose from {sorted(PARAMETRISATIONS)}")
        if weighting not in WEIGHTINGS:
            raise KeyError(f"unknown loss weighting {weighting!r}; choose from {sorted(WEIGHTINGS)}")
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min:g}")
        self.net = net
        self.schedule = schedule
        self.parametrisation = parametrisation
        self.weighting = weighting
        self.data_scale = data_scale
        self.t_min = t_min

    def to_data(self, x: torch.Tensor) -> torch.Tensor:
        """A signal of the diffusion space (e.g. a sampler's result) in data units: ``x / data_scale``."""
        return x / self.data_scale if self.data_scale != 1.0 else x

    def diffuse(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = alpha_t x_0 + sigma_t eps`` for ``x0``, ``noise`` ``[B, C, T]`` and ``t`` ``[B]``."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        return _expand(alpha, x0) * x0 + _expand(sigma, x0) * noise

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> Prediction:
        """Run the network and convert its output to ``eps`` and ``x0`` (the parametrisation's ``to_eps_x0``)."""
        alpha, sigma = self.schedule.alpha_sigma(t)
        out = self.net(x_t, t, **cond.kwargs())
        eps, x0 = PARAMETRISATIONS[self.parametrisation].to_eps_x0(
            out.float(), x_t.float(), _expand(alpha, x_t).float(), _expand(sigma, x_t).float()
        )
        return Prediction(eps=eps, x0=x0)

    def loss(
        self,
        x0: torch.Tensor,
        cond: Conditioning,
        *,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        cfg_p: float = 0.0,
        joint_p: float = 0.0,
        joint_noise: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Per-example weighted loss ``[B]`` of a clean signal ``x0`` ``[B, C, T]`` in data units (diffused as
        ``data_scale * x0``). ``t`` defaults to U[t_min, 1], ``noise`` to N(0, I); ``cfg_p`` drops the text and ``joint_p``
        the joint embedding, independently (:func:`condition_dropout`), after ``joint_noise`` perturbs it (:func:`perturb_joint`)."""
        batch = x0.shape[0]
        gen_device = generator.device if generator is not None else x0.device
        if t is None:
            t = self.t_min + (1.0 - self.t_min) * torch.rand(batch, generator=generator, device=gen_device).to(x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(x0.device, x0.dtype)
        cond = condition_dropout(perturb_joint(cond, joint_noise, generator), cfg_p, joint_p, generator)
        x0 = x0 * self.data_scale
        alpha, sigma = self.schedule.alpha_sigma(t)
        out = self.net(self.diffuse(x0, t, noise), t, **cond.kwargs()).float()
        target = PARAMETRISATIONS[self.parametrisation].target(
            x0.float(), noise.float(), _expand(alpha, x0).float(), _expand(sigma, x0).float()
        )
        mse = (out - target).pow(2).flatten(1).mean(1)  # [B]
        return WEIGHTINGS[self.weighting](alpha, sigma).to(mse.device) * mse

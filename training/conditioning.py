"""Conditioning beyond captions (issue 16): what a text stage is conditioned on, the joint model it needs, a melody.

``n2m train --condition`` (recorded in the checkpoint's ``conditioning`` section, :class:`StageConditioning`):

- ``text`` (default): Noise2Music's caption tokens (section 3.1), unchanged.
- ``audio-embedding``: MusicLM's route (Agostinelli et al. 2023, arXiv 2301.11325, section 3.1): every training example
  is conditioned on the joint model's *audio* embedding of its own clip, so clips without any caption train the stage;
  at sampling a text prompt goes through the same joint model's *text* tower and takes the audio embedding's place
  (the two live in one space), or an audio prompt's embedding does.
- ``text+audio-embedding``: both, each dropped independently while training (``--text-dropout``, ``--audio-dropout``,
  :func:`n2m.training.diffusion.denoiser.condition_dropout`), so that sampling can mix a text prompt and an audio prompt
  with MusicGen-Style's double classifier-free guidance (Rouard et al. 2024, arXiv 2407.12563, section 4.3).
- ``text+text-embedding``: the caption tokens plus the joint model's *text* embedding of the same caption, in the slot
  the audio embedding takes above: the pooled, audio-aligned text vector that Imagen adds beside its T5 tokens (Saharia
  et al. 2022, arXiv 2205.11487, section 2.1 and appendix: pooled embedding into the timestep embedding) and that MusicLM
  conditions on at inference (MuLan's text tower). The joint model was trained to put a caption where its audio lies,
  so the vector carries what the caption says about the sound in a few hundred numbers, where the token states spread
  it over every word. Training and sampling both use the caption's own text embedding: no modality gap, no bridge.
  Each caption is embedded by the joint model while training (its LRU caches repeats); each condition is dropped
  independently for guidance, as above.

The audio embedding is that of the **whole clip**, not of the training window: the joint model embeds 10 s windows and
averages them over the clip (:mod:`n2m.clap`, rule 3), which is what ``n2m label`` stores per shard, so nothing is
embedded again while training; a 3-4 s cascader window would be repeat-padded to 10 s and embed differently from any
text; and a text prompt, which stands in for the embedding at sampling, describes a whole piece as the clip's captions
do. The embedding enters the network as one more cross-attention token after the text tokens plus its own pooled
vector added to the conditioning embedding (:class:`n2m.training.networks.unet1d.UNet1D`), as the caption does.

``--melody`` (generators): the time-aligned melody of the training window, :func:`n2m.melody.melody_features` (the
argmax chroma, MusicGen's melody condition; the module says why that representation) at the stage's own rate (3.2 kHz
frames for the waveform generator, 100 frames/s for the spectrogram generator), as 12 more input channels beside
``x_t``. It is computed on the fly from the clip in the loader workers and is never dropped (guidance acts on the
text and audio conditions). At sampling it comes from any audio file (``n2m sample --melody FILE``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from n2m.errors import UserError
from n2m.melody import PITCH_CLASSES, melody_features
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.diffusion.guidance import classifier_free, double_classifier_free
from n2m.training.joint_bank import JointBank, TextBridge
from n2m.training.stage_spec import StageSpec

if TYPE_CHECKING:
    from n2m.training.train_job import TrainSettings

CONDITIONS = ("text", "audio-embedding", "text+audio-embedding", "text+text-embedding")
MELODY_CHANNELS = len(PITCH_CLASSES)  # 12
DEFAULT_PROMPT_SECONDS = 10.0  # one window of the joint model (n2m.clap's window_s for LAION CLAP and the tower model)


@dataclass(frozen=True)
class StageConditioning:
    """The ``conditioning`` section of a stage's config. Configs written before it existed read as ``text``."""

    condition: str = "text"
    joint_model: str | None = None  # absolute directory of the joint model (audio-embedding conditions)
    joint_model_sha1: str | None = None  # its content hash (n2m.provenance.dir_hash)
    joint_dim: int = 0  # its embedding size D
    melody: bool = False

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise UserError(f"conditioning.condition: {self.condition!r} is not one of {', '.join(CONDITIONS)}")

    @classmethod
    def of(cls, config: dict[str, Any]) -> StageConditioning:
        section = config.get("conditioning") or {}
        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})

    @property
    def text(self) -> bool:
        """Whether caption tokens from the text encoder condition the stage."""
        return self.condition in ("text", "text+audio-embedding", "text+text-embedding")

    @property
    def joint(self) -> bool:
        """Whether a joint audio-text embedding conditions the stage (its clip's audio or its caption's text)."""
        return self.condition != "text"

    @property
    def audio_joint(self) -> bool:
        """Whether the joint slot trained on the clips' *audio* embeddings (so an audio prompt can fill it)."""
        return self.condition in ("audio-embedding", "text+audio-embedding")

    @property
    def text_joint(self) -> bool:
        """Whether the joint slot trained on the captions' joint *text* embeddings (``text+text-embedding``)."""
        return self.condition == "text+text-embedding"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_conditioning(settings: TrainSettings, stage: StageSpec, strict: bool) -> StageConditioning:
    """The stage's conditioning from ``n2m train``'s settings (its flags: :mod:`n2m.training.train_cli`), every misuse a
    one-line :class:`UserError`; ``strict`` (not ``--dry-run``) records the joint model's content hash."""
    from n2m.clap import embed_dim_of
    from n2m.training.encoder_ref import content_hash

    condition = settings.condition or "text"
    joint_dir, melody = settings.joint_model, bool(settings.melody)
    if condition not in CONDITIONS:
        raise UserError(f"--condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if condition != "text" and not stage.text:
        raise UserError(f"--condition {condition}: stage {stage.name} takes no text, so nothing to replace")
    if melody and not (stage.generates and stage.text):
        raise UserError(f"--melody is for the generator stages (generator, spec_generator), not {stage.name}")
    spec = StageConditioning(condition=condition, melody=melody)
    if not spec.joint:
        if joint_dir or settings.joint_noise:
            flag = "--joint-model" if joint_dir else "--joint-noise"
            raise UserError(f"{flag} is for the joint-embedding conditions ({', '.join(CONDITIONS[1:])})")
        return spec
    if not joint_dir:
        raise UserError(f"--condition {condition} needs --joint-model DIR (the joint audio-text model)")
    if not (Path(joint_dir) / "config.json").is_file():
        raise UserError(f"--joint-model {joint_dir}: not a joint model directory (no config.json)")
    if not spec.text and settings.text_encoder:
        raise UserError("--condition audio-embedding conditions on the joint embedding alone: drop --text-encoder "
                        "(or use --condition text+audio-embedding)")
    root = Path(joint_dir).resolve()
    return StageConditioning(condition=condition, joint_model=str(root),
                             joint_model_sha1=content_hash(root) if strict else None,
                             joint_dim=embed_dim_of(str(root)), melody=melody)


# ---------------------------------------------------------------------------------------------------------------------
# The joint model at sampling time


_EMBEDDERS: dict[tuple[str, str], Any] = {}  # (directory, device) -> ClapEmbedder, loaded once per process


def joint_model_dir(spec: StageConditioning, stage: str, near: str | Path, override: str | None = None) -> str:
    """The directory of the joint model a stage was trained with: ``override`` (``--joint-model``) only when it holds
    the recorded content, else the recorded path or a folder with its content near the model
    (:func:`n2m.training.encoder_ref.resolve`). Another model is refused in one line: the stage learnt this model's space."""
    from n2m.training.encoder_ref import content_hash, resolve

    if override:
        if not (Path(override) / "config.json").is_file():
            raise UserError(f"--joint-model {override}: not a joint model directory (no config.json)")
        got = content_hash(override)
        if spec.joint_model_sha1 and got != spec.joint_model_sha1:
            raise UserError(f"--joint-model {override} (sha1 {got[:12]}) is not the joint model the {stage} stage was "
                            f"trained with ({spec.joint_model} sha1 {spec.joint_model_sha1[:12]}): its embeddings "
                            "would be meaningless to it")
        return str(Path(override).resolve())
    resolved = resolve(f"clap:{spec.joint_model}", spec.joint_model_sha1, near, what="joint model",
                       hint="pass --joint-model DIR")
    return resolved.split(":", 1)[1]


def joint_embedder(directory: str, device: torch.device):
    """The :class:`n2m.clap.ClapEmbedder` of ``directory`` on ``device``, loaded once per process."""
    from n2m.clap import ClapEmbedder

    key = (directory, str(device))
    if key not in _EMBEDDERS:
        embedder = ClapEmbedder.from_pretrained(directory, device=str(device))
        embedder.model.requires_grad_(False)
        _EMBEDDERS[key] = embedder
    return _EMBEDDERS[key]


# ---------------------------------------------------------------------------------------------------------------------
# Audio files given at sampling time: an audio prompt, a melody


@dataclass
class AudioFile:
    """A decoded audio file given at sampling time: ``samples`` float32 ``[C, T]`` at ``sample_rate``, the file's
    absolute ``path`` and ``sha256``; for an audio prompt, the excerpt kept (``offset_s``, ``seconds``)."""

    path: str
    sha256: str
    samples: np.ndarray
    sample_rate: int
    offset_s: float = 0.0
    seconds: float = 0.0
    _embeddings: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def describe(self) -> dict[str, Any]:
        """What a sidecar records about the file."""
        return {"path": self.path, "sha256": self.sha256, "offset_s": round(self.offset_s, 4),
                "seconds": round(self.seconds, 4)}

    def embedding(self, embedder) -> np.ndarray:
        """The joint model's audio embedding of the samples, ``[D]`` (computed once per model)."""
        if embedder.model_id not in self._embeddings:
            self._embeddings[embedder.model_id] = embedder.embed_audio([self.samples], self.sample_rate)[0]
        return self._embeddings[embedder.model_id]


def read_audio_file(path: str, what: str) -> AudioFile:
    """Decode ``path`` (any format :func:`n2m.audio.decode` reads); a missing, unreadable or undecodable file is a
    one-line :class:`UserError` naming ``what`` (the flag)."""
    from n2m.audio import AudioError, decode, read_bytes

    try:
        data = read_bytes(path)
        decoded = decode(data, name=path)
    except AudioError as err:
        raise UserError(f"{what} {path}: {err.message}") from err
    return AudioFile(str(Path(path).resolve()), hashlib.sha256(data).hexdigest(), decoded.samples,
                     int(decoded.sample_rate), 0.0, decoded.samples.shape[1] / decoded.sample_rate)


def read_audio_prompt(path: str, seconds: float = DEFAULT_PROMPT_SECONDS) -> AudioFile:
    """The audio prompt: the ``seconds`` at the centre of the file (all of it when shorter; MusicGen-Style also
    conditions on an excerpt, section 3.2), so a silent intro or fade-out does not set the style."""
    if not seconds > 0:
        raise UserError(f"--audio-prompt-seconds must be positive, got {seconds}")
    prompt = read_audio_file(path, "--audio-prompt")
    total = prompt.samples.shape[1]
    keep = min(total, max(1, round(seconds * prompt.sample_rate)))
    start = (total - keep) // 2
    prompt.samples = prompt.samples[:, start:start + keep]
    prompt.offset_s, prompt.seconds = start / prompt.sample_rate, keep / prompt.sample_rate
    if not np.any(prompt.samples):
        raise UserError(f"--audio-prompt {path}: the excerpt at {prompt.offset_s:.1f}-"
                        f"{prompt.offset_s + prompt.seconds:.1f} s is silent")
    return prompt


def fit_frames(x: np.ndarray, length: int) -> np.ndarray:
    """Zero-pad or cut ``[C, F]`` to ``[C, length]`` (zero melody frames mean "no melody")."""
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))


def melody_input(melody: AudioFile, rate: float, length: int, batch: int, device: torch.device) -> torch.Tensor:
    """The melody condition of a generator at ``rate`` frames per second: the file's melody from its start, trimmed
    or zero-padded to ``length`` frames, ``[batch, 12, length]``."""
    frames = fit_frames(melody_features(melody.samples, melody.sample_rate, rate), length)
    return torch.from_numpy(frames).to(device)[None].expand(batch, -1, -1)


def melody_window(mono: np.ndarray, sample_rate: int, stage: StageSpec, window: int, offset_frac: float) -> np.ndarray:
    """Training: the melody of the window ``n2m.training.data`` cuts at ``offset_frac`` of the free range, ``[12, window]``
    at the stage's rate. The clip's melody frames are cut the way the example makers cut the signal (the same share
    of the free range), so the two stay aligned within one frame of the stage's rate."""
    frames = melody_features(mono, sample_rate, stage.sample_rate)  # [12, F]
    start = int(offset_frac * max(0, frames.shape[1] - window))
    return fit_frames(frames[:, start:], window)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling: the conditioning of one text stage for a batch of prompts, and its guidance


DOUBLE_AUDIO_GUIDANCE = 3.0  # alpha of double guidance when --audio-guidance is not given (audiocraft's cfg_coef)


def check_prompting(models: dict, texts: list[str], audio_prompt: AudioFile | None, melody: AudioFile | None) -> None:
    """Refuse, before any work, prompts that a cascade's stages cannot take (one line each): an audio prompt that no
    stage takes, an audio prompt together with text for a stage whose only condition is the joint embedding, a melody
    no stage takes, and a melody stage without a melody."""
    specs = {stage: model.conditioning for stage, model in models.items()}
    for stage, spec in specs.items():
        if audio_prompt is not None and spec.text_joint:
            raise UserError(f"--audio-prompt: the {stage} stage's joint embedding learnt captions' text embeddings "
                            "(--condition text+text-embedding), not audio: it takes text prompts only")
    if audio_prompt is not None and not any(spec.audio_joint for spec in specs.values()):
        raise UserError("--audio-prompt: no stage of this cascade was trained with --condition audio-embedding or "
                        "text+audio-embedding")
    for stage, spec in specs.items():
        if audio_prompt is not None and spec.condition == "audio-embedding" and any(t.strip() for t in texts):
            raise UserError(f"the {stage} stage takes one joint embedding (--condition audio-embedding): give a text "
                            "prompt or --audio-prompt, not both (both need a stage trained with "
                            "--condition text+audio-embedding)")
        if spec.melody and melody is None:
            raise UserError(f"{models[stage].path} ({stage}) was trained with --melody: pass --melody FILE")
    if melody is not None and not any(spec.melody for spec in specs.values()):
        raise UserError("--melody: no stage of this cascade was trained with --melody")


def prompt_conditioning(cond: Conditioning, texts: list[str], encoder, embedder, audio_prompt: AudioFile | None,
                        guidance: float, audio_guidance: float | None, bridge: TextBridge = TextBridge(),
                        bank: JointBank | None = None, stage: str = "",
                        from_text: bool = False) -> tuple[Conditioning, Any, dict[str, Any]]:
    """``(cond, guide, scales)`` of a text stage for ``texts`` ``[B]``: ``cond`` with the caption tokens (``encoder``,
    a :class:`n2m.training.text.TextEncoder`, or None) and the joint embedding (``embedder``, a
    :class:`n2m.clap.ClapEmbedder`, or None); ``guide(denoise) -> guided denoiser``; ``scales`` for the sidecar.

    The joint embedding is the audio prompt's when there is one, else the prompts' own joint *text* embedding taken
    across the modality gap by ``bridge`` (:class:`n2m.training.joint_bank.TextBridge`: the mean of the stage's ``bank``
    clips nearest it, or itself as in MusicLM; recorded in ``scales["text_bridge"]``; ``from_text``: the stage trained
    on text embeddings, which take their own place); an empty prompt is the dropped
    condition. Guidance: text only or the joint text embedding:
    classifier-free guidance at ``guidance`` (Ho & Salimans 2022); an audio prompt alone: at ``audio_guidance``
    (default ``guidance``); an audio prompt and text on a text + audio stage: double guidance,
    :func:`n2m.training.diffusion.guidance.double_classifier_free` with ``alpha = audio_guidance`` (default
    :data:`DOUBLE_AUDIO_GUIDANCE`) and ``beta = guidance`` (Rouard et al. 2024, section 4.3).
    """
    batch = len(texts)
    has_text = [bool(t.strip()) for t in texts]
    if encoder is not None:
        states, mask = encoder.encode(texts)
        cond = replace(cond, text=states, text_mask=mask)
    audio = audio_prompt is not None and embedder is not None
    if embedder is not None:
        device = encoder.device if encoder is not None else embedder.device
        if audio:
            vectors = np.repeat(audio_prompt.embedding(embedder)[None], batch, axis=0)
            keep = [True] * batch
        else:
            vectors, bridged = bridge.apply(embedder.embed_text([t if t.strip() else " " for t in texts]), bank, stage,
                                           from_text)
            keep = has_text
        cond = replace(cond, joint=torch.from_numpy(vectors).float().to(device),
                       joint_mask=torch.tensor(keep, dtype=torch.bool, device=device))
        cond = cond.without_joint(~cond.joint_mask)
    everyone = torch.ones(batch, dtype=torch.bool, device=(cond.text if cond.text is not None else cond.joint).device)
    uncond = cond.without_text(everyone).without_joint(everyone)
    if audio and encoder is not None and any(has_text):
        alpha = DOUBLE_AUDIO_GUIDANCE if audio_guidance is None else audio_guidance
        audio_only = cond.without_text(everyone)
        return cond, lambda denoise: double_classifier_free(denoise, guidance, alpha, audio_only, uncond), {
            "mode": "double", "text": guidance, "audio": alpha}
    if audio:
        scale = guidance if audio_guidance is None else audio_guidance
        return cond, lambda denoise: classifier_free(denoise, scale, uncond), {"mode": "audio", "text": None, "audio": scale}
    scales = {"mode": "text", "text": guidance, "audio": None}
    if embedder is not None:
        scales["text_bridge"] = bridged
    return cond, lambda denoise: classifier_free(denoise, guidance, uncond), scales

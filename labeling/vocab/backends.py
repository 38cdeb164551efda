"""LLM backends behind one interface, chosen by ``--llm NAME[:TARGET]`` from the :data:`BACKENDS` registry.

- ``hf:DIR`` — a local transformers causal-LM directory (:mod:`n2m.labeling.vocab.hf`): batched generation, chat template
  when the tokenizer has one, cuda when present, bf16/fp16.
- ``openai:URL`` — an OpenAI-compatible ``/chat/completions`` endpoint as vLLM, llama.cpp server and Ollama serve
  (:mod:`n2m.labeling.vocab.openai_http`): bounded concurrency, timeouts, retries with exponential backoff, API key from an
  environment variable.
- ``template`` — a deterministic scripted generator that writes sentences from the metadata fields
  (:mod:`n2m.labeling.vocab.template`). It is NOT a language model; the embedded demo uses it because no LLM is available.

A backend turns :class:`Request` objects into :class:`Outcome` objects, yielded as they finish (in any order) so the job
can cache each answer at once. ``model`` is the identity that goes into cache keys and provenance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from n2m.errors import UserError
from n2m.labeling.vocab.tracks import Track


@dataclass(frozen=True)
class Request:
    """One question: a track, the prompt that asked it (``prompt_id``), its chat ``messages`` and the sample index."""

    track: Track
    prompt_id: str
    messages: tuple[dict[str, str], ...]
    sample: int


@dataclass(frozen=True)
class Outcome:
    """An answer (``text``) or a machine-readable ``error`` (``timeout``, ``http_500``, ``malformed_json``, ...)."""

    text: str | None
    error: str = ""
    attempts: int = 1


@dataclass(frozen=True)
class GenerationOptions:
    """Options shared by the backends (each uses the ones that apply to it)."""

    model: str | None = None  # openai: the served model name; hf: the directory when not given as hf:DIR
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0
    batch_size: int = 8  # hf
    device: str = "auto"  # hf: auto | cuda | cpu
    dtype: str = "auto"  # hf: auto | bf16 | fp16 | fp32
    concurrency: int = 4  # openai
    timeout: float = 120.0  # openai, seconds per request
    retries: int = 4  # openai, extra attempts after the first
    backoff: float = 1.0  # openai, first wait in seconds; doubles each retry
    api_key_env: str = "OPENAI_API_KEY"  # openai


class Backend(ABC):
    """A text generator. Subclasses set ``name`` and ``model`` and implement :meth:`generate`."""

    name: str = ""
    model: str = ""

    def __init__(self, options: GenerationOptions):
        self.options = options

    def params(self, request: Request) -> dict[str, Any]:
        """The generation settings that shape this request's answer (part of its cache key)."""
        o = self.options
        return {"temperature": o.temperature, "top_p": o.top_p, "max_new_tokens": o.max_new_tokens, "seed": o.seed,
                "sample": request.sample}

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Outcome]]:
        """Yield ``(index into requests, outcome)`` for every request, as each finishes."""

    def describe(self) -> dict[str, Any]:
        """What the vocabulary's JSON records about the backend."""
        return {"backend": self.name, "model": self.model, "is_llm": True}

    def close(self) -> None:  # noqa: B027 - optional hook; backends holding nothing need not override it
        """Release models, sessions and threads."""


def _hf(target: str, options: GenerationOptions) -> Backend:
    from n2m.labeling.vocab.hf import HFBackend

    return HFBackend(target or options.model or "", options)


def _openai(target: str, options: GenerationOptions) -> Backend:
    from n2m.labeling.vocab.openai_http import OpenAIBackend

    return OpenAIBackend(target, options)


def _template(target: str, options: GenerationOptions) -> Backend:
    from n2m.labeling.vocab.template import TemplateBackend

    if target:
        raise UserError(f"--llm template takes no target, got template:{target}")
    return TemplateBackend(options)


BACKENDS: dict[str, Callable[[str, GenerationOptions], Backend]] = {"hf": _hf, "openai": _openai, "template": _template}


def make_backend(spec: str, options: GenerationOptions) -> Backend:
    """Build the backend named by ``spec`` (``hf:DIR``, ``openai:http://host:port/v1``, ``template``)."""
    name, _, target = spec.partition(":")
    if name not in BACKENDS:
        raise UserError(f"unknown --llm backend {name!r} (choose from {', '.join(BACKENDS)}: hf:DIR, "
                        "openai:http://host:port/v1 with --model NAME, template)")
    return BACKENDS[name](target, options)

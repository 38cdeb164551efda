"""Local transformers causal LM (``--llm hf:DIR``): any HF chat/instruct model directory, loaded offline.

Prompts go through the tokenizer's chat template when it has one (``add_generation_prompt=True``), otherwise the system
and user messages are joined as plain text. Generation is batched with left padding (decoder-only models continue the
last real token), greedy when ``temperature == 0`` and sampled otherwise (``torch.manual_seed(seed + batch start)``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from n2m.errors import UserError
from n2m.labeling.vocab.backends import Backend, GenerationOptions, Outcome, Request

log = logging.getLogger(__name__)

_BIG_FILE = 8 << 20
_WINDOW = 16  # batches per length-sorted window (less padding, answers still stream)


def model_fingerprint(path: str | Path) -> str:
    """A cheap content identity of a model directory: names, sizes, and the bytes of small files plus the first and last
    MiB of big ones (weights of many GB are not read whole). 16 hex chars."""
    digest = hashlib.sha1()
    root = Path(path)
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root)}:{size}".encode())
        with file.open("rb") as handle:
            if size <= _BIG_FILE:
                digest.update(handle.read())
            else:
                digest.update(handle.read(1 << 20))
                handle.seek(size - (1 << 20))
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)


def _dtype(name: str, device):
    import torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in table:
        raise UserError(f"--dtype {name}: choose from auto, {', '.join(table)}")
    return table[name]


class HFBackend(Backend):
    """Batched generation with a local ``AutoModelForCausalLM`` + ``AutoTokenizer`` directory."""

    name = "hf"

    def __init__(self, path: str, options: GenerationOptions):
        super().__init__(options)
        if not path:
            raise UserError("--llm hf needs a model directory: --llm hf:DIR (or --model DIR)")
        if not Path(path).is_dir():
            raise UserError(f"--llm hf:{path}: no such model directory")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = _device(options.device)
        self.torch_dtype = _dtype(options.dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=self.torch_dtype)
        except (OSError, ValueError) as err:
            raise UserError(f"--llm hf:{path}: cannot load a causal LM and tokenizer: {err}".splitlines()[0]) from err
        self.lm.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.path = str(Path(path).resolve())
        self.model = f"{Path(path).name}@{model_fingerprint(path)}"
        self._torch = torch
        log.info("hf backend: %s on %s (%s), chat template: %s", self.path, self.device, self.torch_dtype, self.chat)

    def params(self, request: Request) -> dict[str, Any]:
        return {**super().params(request), "dtype": str(self.torch_dtype).removeprefix("torch.")}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.path, "device": str(self.device),
                "dtype": str(self.torch_dtype).removeprefix("torch."), "chat_template": self.chat}

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """The exact text the model continues: the chat template's rendering, or the messages joined as plain text."""
        if self.chat:
            return self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _generate_batch(self, texts: list[str], seed: int) -> list[str]:
        torch = self._torch
        encoded = self.tokenizer(texts, padding=True, add_special_tokens=not self.chat, return_tensors="pt")
        encoded = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        o = self.options
        sampling = {"do_sample": True, "temperature": o.temperature, "top_p": o.top_p} if o.temperature > 0 else {
            "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.lm.generate(**encoded, max_new_tokens=o.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                                   **sampling)  # [B, T_prompt + T_new]
        new = out[:, encoded["input_ids"].shape[1]:]
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def generate(self, requests: Sequence[Request]) -> Iterator[tuple[int, Outcome]]:
        texts = [self.render(r.messages) for r in requests]
        size = max(1, self.options.batch_size)
        window = size * _WINDOW
        for w in range(0, len(texts), window):
            order = sorted(range(w, min(w + window, len(texts))), key=lambda i: len(texts[i]))
            for b in range(0, len(order), size):
                batch = order[b:b + size]
                seed = self.options.seed + batch[0]
                try:
                    answers = self._generate_batch([texts[i] for i in batch], seed)
                except (RuntimeError, ValueError) as err:  # e.g. out of memory: retry one by one, record failures
                    log.warning("batch of %d failed (%s); retrying one at a time", len(batch), err)
                    for i in batch:
                        try:
                            yield i, Outcome(self._generate_batch([texts[i]], seed)[0])
                        except (RuntimeError, ValueError) as one:
                            log.warning("generation failed for %s: %s", requests[i].track.track_id, one)
                            yield i, Outcome(None, "generation_error")
                    continue
                yield from ((i, Outcome(text)) for i, text in zip(batch, answers))

    def close(self) -> None:
        self.lm = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()

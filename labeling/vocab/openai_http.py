"""OpenAI-compatible chat endpoint (``--llm openai:http://host:port/v1 --model NAME``), as vLLM, llama.cpp server and
Ollama serve.

Requests run in a thread pool of ``concurrency`` workers with at most ``2 * concurrency`` in flight (memory stays bounded
for millions of tracks). Timeouts, connection errors, HTTP 408/409/429/5xx and malformed answers are retried up to
``retries`` times with exponential backoff (``backoff * 2**attempt`` seconds, capped at 60). Other 4xx answers fail the
request at once; 401/403/404 stop the job (a wrong key, URL or model name will not fix itself).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import requests

from n2m.errors import UserError
from n2m.labeling.vocab.backends import Backend, GenerationOptions, Outcome, Request

log = logging.getLogger(__name__)

_RETRY_STATUS = {408, 409, 429}
_FATAL_STATUS = {401: "unauthorised (check the key in ${env})", 403: "forbidden (check the key in ${env})",
                 404: "not found (check the URL ends in /v1 and the --model name)"}
_MAX_WAIT = 60.0


class OpenAIBackend(Backend):
    """Chat completions over HTTP with bounded concurrency, timeouts and retries."""

    name = "openai"

    def __init__(self, base_url: str, options: GenerationOptions):
        super().__init__(options)
        if not base_url.startswith(("http://", "https://")):
            raise UserError(f"--llm openai:{base_url}: expected openai:http://host:port/v1")
        if not options.model:
            raise UserError("--llm openai needs --model NAME (the model name the server serves)")
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.model = options.model
        key = os.environ.get(options.api_key_env, "")
        self._headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self._local = threading.local()
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.base_url, "api_key_env": self.options.api_key_env}

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def _payload(self, request: Request) -> dict[str, Any]:
        o = self.options
        return {"model": self.model, "messages": list(request.messages), "temperature": o.temperature, "top_p": o.top_p,
                "max_tokens": o.max_new_tokens, "seed": o.seed + request.sample, "n": 1}

    def _once(self, payload: dict[str, Any]) -> tuple[str | None, str]:
        """One HTTP attempt: ``(text, "")``, or ``(None, reason)`` for a retryable failure."""
        with self._count_lock:
            self.requests_sent += 1
        try:
            response = self._session().post(self.url, json=payload, headers=self._headers,
                                            timeout=(min(10.0, self.options.timeout), self.options.timeout))
        except requests.Timeout:
            return None, "timeout"
        except requests.ConnectionError:
            return None, "connection_error"
        status = response.status_code
        if status in _FATAL_STATUS:
            reason = _FATAL_STATUS[status].replace("${env}", f"${self.options.api_key_env}")
            raise UserError(f"{self.url} answered HTTP {status}: {reason}")
        if status in _RETRY_STATUS or status >= 500:
            return None, f"http_{status}"
        if status != 200:
            raise _Permanent(f"http_{status}")
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None, "malformed_json"
        if not isinstance(content, str):
            return None, "malformed_json"
        return content, ""

    def complete(self, request: Request) -> Outcome:
        """Ask one request, retrying retryable failures with exponential backoff."""
        payload = self._payload(request)
        reason = ""
        for attempt in range(self.options.retries + 1):
            if attempt:
                time.sleep(min(_MAX_WAIT, self.options.backoff * 2 ** (attempt - 1)))
            try:
                text, reason = self._once(payload)
            except _Permanent as err:
                return Outcome(None, str(err), attempt + 1)
            if text is not None:
                return Outcome(text, "", attempt + 1)
            log.info("%s for %s (attempt %d)", reason, request.track.track_id, attempt + 1)
        return Outcome(None, reason, self.options.retries + 1)

    def generate(self, requests_: Sequence[Request]) -> Iterator[tuple[int, Outcome]]:
        workers = max(1, self.options.concurrency)
        pending: dict[Future, int] = {}
        queue = iter(range(len(requests_)))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="n2m-vocab-http")
        try:
            for index in queue:
                pending[pool.submit(self.complete, requests_[index])] = index
                if len(pending) >= 2 * workers:
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    yield index, future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(self.complete, requests_[nxt])] = nxt
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class _Permanent(Exception):
    """A failure that retrying cannot fix (an HTTP 4xx other than 408/409/429 and 401/403/404)."""


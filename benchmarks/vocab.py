"""Benchmark of ``n2m vocab generate``: what concurrency, batching and the cache buy, and what the job adds on top.

- openai: a local OpenAI-compatible server answers each request after a fixed latency. Baseline: the same backend with
  ``concurrency=1``. Printed: requests/s at ``--concurrency``, its speed-up over the baseline (ideal = concurrency),
  the whole CLI job (cache writes, cleaning, Parquet) against the bare backend at the same concurrency, and a re-run
  answered from the cache.
- hf: a small random Llama (CPU). Baseline: ``batch_size=1``. Printed: generated tokens/s with ``--batch-size`` and the
  speed-up over the baseline.

    python benchmarks/vocab.py [--requests 64] [--latency 0.05] [--concurrency 8] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from n2m.cli import main  # noqa: E402
from n2m.labeling.vocab.backends import GenerationOptions, make_backend  # noqa: E402
from n2m.labeling.vocab.generate import build_requests  # noqa: E402
from n2m.labeling.vocab.prompts import load_prompts  # noqa: E402
from n2m.labeling.vocab.tracks import Track  # noqa: E402

ANSWER = ("A {mood} piano piece with soft strings. The drums are brushed and quiet. It sounds like a warm studio "
          "recording from the {decade}s.")
MOODS = ("calm", "dark", "happy", "dreamy", "tense", "playful", "euphoric", "nostalgic")


def serve(latency: float) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            number = int(body["messages"][-1]["content"].split('"')[1].split()[-1])
            text = ANSWER.format(mood=MOODS[number % 8], decade=1950 + 10 * (number % 7))
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
            time.sleep(latency)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def tracks(n: int) -> list[Track]:
    return [Track(f"t{i}", f"Track {i}", "Bench Artist", ("ambient",), {"title": f"Track {i}"}) for i in range(n)]


def timed_backend(spec: str, options: GenerationOptions, n: int) -> float:
    backend = make_backend(spec, options)
    requests = build_requests(tracks(n), load_prompts(None), 1)
    start = time.perf_counter()
    answers = sum(o.text is not None for _, o in backend.generate(requests))
    elapsed = time.perf_counter() - start
    backend.close()
    assert answers == n, f"{n - answers} requests failed"
    return elapsed


def bench_openai(args: argparse.Namespace, work: Path) -> None:
    httpd, url = serve(args.latency)
    try:
        n = args.requests
        opts = {"model": "bench", "timeout": 30.0}
        base = timed_backend(f"openai:{url}", GenerationOptions(concurrency=1, **opts), n)
        fast = timed_backend(f"openai:{url}", GenerationOptions(concurrency=args.concurrency, **opts), n)
        manifest = work / "manifest.jsonl"
        manifest.write_text("".join(json.dumps({"path": f"{i}.wav", "title": f"Track {i}", "artist": "Bench Artist",
                                                "tags": ["ambient"]}) + "\n" for i in range(n)))
        argv = ["vocab", "generate", "--from", str(manifest), "--llm", f"openai:{url}", "--model", "bench",
                "--out", str(work / "vocab" / "lf.parquet"), "--concurrency", str(args.concurrency)]
        with contextlib.redirect_stdout(io.StringIO()):
            start = time.perf_counter()
            assert main(argv) == 0
            job = time.perf_counter() - start
            start = time.perf_counter()
            assert main(argv) == 0
            rerun = time.perf_counter() - start
    finally:
        httpd.shutdown()
        httpd.server_close()
    print(f"openai  {n} requests, {args.latency * 1000:.0f} ms server latency")
    print(f"  baseline concurrency=1: {n / base:7.1f} req/s")
    print(f"  concurrency={args.concurrency}:        {n / fast:7.1f} req/s  = {base / fast:.2f}x baseline "
          f"(ideal {args.concurrency}x)")
    print(f"  CLI job (cache + cleaning + Parquet): {job:.2f} s = {job / fast:.2f}x the bare backend")
    print(f"  re-run from the cache: {rerun:.2f} s = {rerun / job:.2f}x the first run")


def tiny_llama(root: Path) -> str:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ("describe the music of song track by bench artist tags ambient write four to six sentences about how it "
             "sounds genre mood instrumentation tempo era production do not name any person piano strings drums . ,")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([words] * 3, trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=8, num_key_value_heads=4, pad_token_id=0, bos_token_id=2,
                         eos_token_id=None)  # no eos: every answer runs to max_new_tokens
    torch.manual_seed(0)
    fast.save_pretrained(root)
    LlamaForCausalLM(config).save_pretrained(root)
    return str(root)


def bench_hf(args: argparse.Namespace, work: Path) -> None:
    path = tiny_llama(work / "llama")
    n, tokens = args.hf_requests, args.max_new_tokens
    opts = {"temperature": 0.0, "max_new_tokens": tokens, "device": "cpu"}
    timed_backend(f"hf:{path}", GenerationOptions(batch_size=args.batch_size, **opts), 2)  # warm-up
    base = timed_backend(f"hf:{path}", GenerationOptions(batch_size=1, **opts), n)
    batched = timed_backend(f"hf:{path}", GenerationOptions(batch_size=args.batch_size, **opts), n)
    print(f"hf  {n} requests x {tokens} new tokens, random Llama 4x256 on CPU")
    print(f"  baseline batch_size=1: {n * tokens / base:8.1f} tokens/s")
    print(f"  batch_size={args.batch_size}:        {n * tokens / batched:8.1f} tokens/s  = {base / batched:.2f}x baseline")


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64, help="openai: requests per measurement")
    parser.add_argument("--latency", type=float, default=0.05, help="openai: server seconds per answer")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--hf-requests", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_openai(args, Path(tmp))
        bench_hf(args, Path(tmp))


if __name__ == "__main__":
    main_()

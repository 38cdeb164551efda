"""The local transformers backend with a tiny randomly initialised Llama and a WordLevel tokenizer trained on test text,
saved to a tmp dir and loaded through the production path (its text is gibberish: these tests check the plumbing)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from n2m.cli import main
from n2m.labeling.vocab.backends import GenerationOptions, make_backend
from n2m.labeling.vocab.clean import CleanRules, near_key, reject_reason
from n2m.labeling.vocab.generate import build_requests
from n2m.labeling.vocab.prompts import load_prompts
from n2m.labeling.vocab.tracks import Track, read_tracks
from n2m.schema import text_id

CORPUS = [
    "a warm slow piano ballad with soft strings .", "fast rock song with loud electric guitar and drums .",
    "calm ambient pad with long reverb .", "a funky bass line and tight drums drive the groove .",
    "describe the music of the song by tags write sentences about how it sounds genre mood instrumentation tempo .",
    "era and production do not name the artist or any other person introduction conclusion only .",
    "you are a music expert who describes recordings nora vale golden harbor .",
]
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _save_model(root, chat: bool) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(CORPUS * 3, trainers.WordLevelTrainer(special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", additional_special_tokens=specials[4:])
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, bos_token_id=2, eos_token_id=3,
                         initializer_range=0.5)  # large weights: continuations that depend on the prompt
    torch.manual_seed(0)
    path = root / ("chat" if chat else "plain")
    fast.save_pretrained(path)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def lm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lm")
    return {"chat": _save_model(root, chat=True), "plain": _save_model(root, chat=False)}


def _tracks(n: int) -> list[Track]:
    moods = ["calm", "happy", "dark", "dreamy", "energetic"]
    return [Track(track_id=f"t{i}", title=f"Golden Harbor {'x' * i}", artist="Nora Vale",
                  tags=("ambient", moods[i % 5]), meta={"title": "", "mood": moods[i % 5]}) for i in range(n)]


def test_batched_generation_matches_one_at_a_time(lm_dirs):
    """Left-padded batches (sorted by length) give the same greedy text as unpadded single prompts run directly."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = GenerationOptions(temperature=0.0, max_new_tokens=12, batch_size=3, device="cpu")
    backend = make_backend(f"hf:{lm_dirs['chat']}", options)
    requests = build_requests(_tracks(5), load_prompts(None), per_track=1)
    got = dict(backend.generate(requests))
    assert sorted(got) == list(range(5)) and all(o.text is not None for o in got.values())

    tokenizer = AutoTokenizer.from_pretrained(lm_dirs["chat"])
    model = AutoModelForCausalLM.from_pretrained(lm_dirs["chat"]).eval()
    for index, request in enumerate(requests):
        text = tokenizer.apply_chat_template(list(request.messages), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=0)
        expected = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        assert got[index].text == expected
    assert len({o.text for o in got.values()}) > 1  # different prompts, different continuations


def test_chat_template_is_used_only_when_the_tokenizer_has_one(lm_dirs):
    options = GenerationOptions(temperature=0.0, max_new_tokens=4, device="cpu")
    messages = build_requests(_tracks(1), load_prompts(None), per_track=1)[0].messages
    chat = make_backend(f"hf:{lm_dirs['chat']}", options)
    plain = make_backend("hf", GenerationOptions(model=lm_dirs["plain"], temperature=0.0, max_new_tokens=4))
    assert chat.chat and not plain.chat
    rendered = chat.render(messages)
    assert rendered.startswith("<|system|> You are a music expert") and rendered.endswith("<|assistant|>")
    assert plain.render(messages) == f"{messages[0]['content']}\n\n{messages[1]['content']}\n\n"
    assert chat.model != plain.model  # the tokenizer differs, so the fingerprint does
    assert chat.describe()["dtype"] == "float32" and chat.describe()["device"] == "cpu"


def test_generate_cli_caches_cleans_and_writes_the_contract(lm_dirs, tmp_path, capsys):
    manifest = tmp_path / "manifest.jsonl"
    with manifest.open("w") as handle:
        for i in range(6):
            tags = [("ambient", "calm", "rock", "drums", "piano", "strings")[i], "calm"]
            handle.write(json.dumps({"path": f"{i}.wav", "title": "Golden Harbor", "artist": "Nora Vale",
                                     "tags": tags, "holdout": i == 5}) + "\n")
    out = tmp_path / "vocab" / "hf.parquet"
    args = ["vocab", "generate", "--from", str(manifest), "--llm", f"hf:{lm_dirs['plain']}", "--out", str(out),
            "--per-track", "2", "--batch-size", "4", "--temperature", "1.0", "--max-new-tokens", "40",
            "--min-words", "3", "--exclude-holdout", "--dtype", "fp32"]
    assert main(args) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"] == {"total": 10, "cached": 0, "generated": 10, "failed": 0, "failed_by_reason": {},
                                "retries": 0}
    assert meta["input"]["skipped"] == {"holdout": 1}
    assert meta["backend_info"]["chat_template"] is False and meta["model"].startswith("plain@")
    counts = meta["counts"]
    assert counts["sentences"] == counts["kept"] + counts["rejected"] + counts["duplicates_removed"]
    assert counts["kept"] > 0

    table = pq.read_table(out).to_pylist()
    assert len(table) == counts["kept"] and len({r["id"] for r in table}) == len(table)
    track = Track("x", "Golden Harbor", "Nora Vale", ())
    for row in table:  # every kept sentence passes the rules and carries its provenance
        assert row["id"] == text_id(row["text"]) and row["kind"] == "long" and row["backend"] == "hf"
        assert reject_reason(row["text"], track, CleanRules(min_words=3)) == ""
        assert "nora vale" not in near_key(row["text"]) and "golden harbor" not in near_key(row["text"])
    assert {r["track_id"] for r in table} <= {f"{i}.wav" for i in range(5)}
    assert {r["prompt_id"] for r in table} == {"describe"}

    capsys.readouterr()
    assert main(args) == 0  # second run: every answer from the cache, nothing generated
    assert "10 cached, 0 generated" in capsys.readouterr().out
    assert pq.read_table(out).to_pylist() == table


def test_hf_errors_are_one_line(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("title,artist,tags\nA Song,Someone,rock\n")
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", f"hf:{tmp_path / 'missing'}",
                 "--out", str(tmp_path / "v.parquet")]) == 2
    assert "no such model directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", f"hf:{tmp_path / 'empty'}",
                 "--out", str(tmp_path / "v.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot load a causal LM" in err


def test_read_tracks_feeds_the_prompts(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('title,artist,tags\nA Song,Someone,"rock, loud"\n,,\n')
    tracks = read_tracks(str(manifest))
    assert [t.tags for t in tracks.tracks] == [("rock", "loud")] and tracks.skipped == {"no_metadata": 1}
    user = build_requests(tracks.tracks, load_prompts(None), 1)[0].messages[-1]["content"]
    assert user.startswith('Describe the music of the song "A Song" by Someone. Tags: rock, loud.')

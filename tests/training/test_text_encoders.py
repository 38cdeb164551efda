"""``hf:DIR`` text encoders: a tiny random BERT (tokenizer trained on the test captions) checked against the model run
directly, an encoder-decoder T5 directory (its encoder), ``n2m train`` with the BERT through the real Lightning path,
and all-MiniLM-L6-v2 when ``n2m models fetch`` has installed it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import LONG, SHORT, write_tiny_t5

from n2m.cli import build_parser
from n2m.config import apply_config
from n2m.errors import UserError
from n2m.training.text import HFTextEncoder, load_text_encoder, text_width

TEXTS = LONG + SHORT + [f"track {i} by the testers" for i in range(32)]


def write_tiny_bert(path: Path, texts: list[str], hidden: int = 32) -> Path:
    """A random 2-layer BERT and a WordPiece tokenizer trained on ``texts``, saved as a HF directory."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=24)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=24)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> str:
    return str(write_tiny_bert(tmp_path_factory.mktemp("bert"), TEXTS))


def test_bert_states_mask_and_pooled_vector_match_the_model_run_directly(tiny_bert):
    from transformers import AutoTokenizer, BertModel

    encoder = load_text_encoder(f"hf:{tiny_bert}", 64)
    assert isinstance(encoder, HFTextEncoder) and encoder.dim == text_width(f"hf:{tiny_bert}") == 32
    texts = ["a calm piano piece with soft strings", "rock", "", "jazz " * 100]
    states, mask = encoder.encode(texts)
    assert states.shape == (4, 64, 32) and mask.dtype == torch.bool
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = BertModel.from_pretrained(tiny_bert).eval()
    pooled = encoder.pooled(texts).numpy()
    for i, text in enumerate(texts[:2]):
        ids = tokenizer(text, return_tensors="pt")["input_ids"]
        n = ids.shape[1]
        assert mask[i].sum() == n and mask[i, :n].all()
        with torch.no_grad():
            ref = model(input_ids=ids).last_hidden_state[0]
        torch.testing.assert_close(states[i, :n], ref, atol=1e-5, rtol=1e-4)
        assert (states[i, n:] == 0).all()
        np.testing.assert_allclose(pooled[i], ref.numpy().mean(axis=0), atol=1e-5)  # mean over the real tokens
    assert not mask[2].any() and (pooled[2] == 0).all()  # blank caption: unconditional
    assert mask[3].sum() == 24 and not mask[3, 24:].any()  # truncated at the model's 24 positions, padded to 64
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_encoder_of_an_encoder_decoder_directory(tmp_path):
    from transformers import AutoTokenizer, T5Config, T5Model

    tokenizer_dir = write_tiny_t5(tmp_path / "tok", TEXTS)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(1)
    full = T5Model(config).eval()
    full.save_pretrained(str(tmp_path / "t5full"))
    tokenizer.save_pretrained(str(tmp_path / "t5full"))
    encoder = load_text_encoder(f"hf:{tmp_path / 't5full'}", 16)
    assert "decoder" not in dict(encoder.model.named_modules())  # the encoder alone was loaded
    states, mask = encoder.encode(["a slow ambient pad drifting in space"])
    ids = tokenizer("a slow ambient pad drifting in space", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = full.encoder(input_ids=ids).last_hidden_state[0]
    torch.testing.assert_close(states[0, : ids.shape[1]], ref, atol=1e-5, rtol=1e-4)
    assert int(mask.sum()) == ids.shape[1]


def test_bad_hf_directories_are_user_errors(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(UserError, match="cannot"):
        load_text_encoder(f"hf:{tmp_path}", 16)
    with pytest.raises(UserError, match="config.json"):
        load_text_encoder(f"hf:{tmp_path / 'missing'}", 16)


def _with_weights(src: str, dst: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> str:
    """A copy of the HF directory ``src`` whose safetensors tensors ``edit`` changed in place; returns its spec."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return f"hf:{dst}"


def test_weights_that_do_not_fit_the_config_are_one_line_errors(tiny_bert, tmp_path, capfd):
    query = "encoder.layer.0.attention.self.query.weight"

    def rename(t):
        t["encoder.layer.0.attention.self.kwery.weight"] = t.pop(query)

    def narrow(t):
        t[query] = t[query][:, :16].contiguous()

    def drop_layer(t):
        for key in [k for k in t if k.startswith("encoder.layer.1.")]:
            del t[key]

    expected = {
        "renamed": (rename, [f"1 missing ({query})", "1 unexpected (encoder.layer.0.attention.self.kwery.weight)"]),
        "narrowed": (narrow, [f"1 misshapen ({query} file [32, 16] vs model [32, 32])"]),
        # a BERT layer has 16 tensors: q, k, v, attention output, its LayerNorm, intermediate, output, its LayerNorm
        # (weight and bias each); sorted, the first three are the attention output's dense and LayerNorm tensors
        "layer_dropped": (drop_layer, ["16 missing (encoder.layer.1.attention.output.LayerNorm.bias, "
                                       "encoder.layer.1.attention.output.LayerNorm.weight, "
                                       "encoder.layer.1.attention.output.dense.bias, ...)"]),
    }
    for name, (edit, parts) in expected.items():
        with pytest.raises(UserError) as caught:
            load_text_encoder(_with_weights(tiny_bert, tmp_path / name, edit), 16)
        message = str(caught.value)
        assert "\n" not in message and "do not fit its config.json" in message, message
        assert all(part in message for part in parts), message
    cut = tmp_path / "cut"
    shutil.copytree(tiny_bert, cut)
    data = (cut / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot load text encoder"):
        load_text_encoder(f"hf:{cut}", 16)
    assert capfd.readouterr().err == ""  # no key table or progress bar beside the one-line error


def _minilm() -> str:
    try:
        from n2m.models import model_dir

        return str(model_dir("all-MiniLM-L6-v2"))
    except (ImportError, UserError) as err:
        pytest.skip(f"all-MiniLM-L6-v2 is not installed (run `n2m models fetch`): {err}")


@pytest.mark.parametrize("encoder", ["tiny-bert", "all-MiniLM-L6-v2"])
def test_n2m_train_conditions_on_a_hf_encoder(tiny_build, tiny_bert, encoder, tmp_path):
    from lightning.pytorch.callbacks import Callback

    from n2m.provenance import dir_hash
    from n2m.training.train_cli import run_train

    path, width = (tiny_bert, 32) if encoder == "tiny-bert" else (_minilm(), 384)
    seen = {}

    class Conditioned(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            cond = pl_module.conditioning(batch, augment=False)
            seen.setdefault("text", (cond.text.detach().clone(), cond.text_mask.clone(), list(batch["text"])))

    out = tmp_path / "run"
    argv = ["train", "--stage", "generator", "--build", tiny_build["root"], "--labels", "tiny", "--preset", "tiny",
            "--text-encoder", f"hf:{path}", "--out", str(out), "--window", "0.5", "--batch-size", "4",
            "--num-workers", "0", "--max-steps", "3", "--val-every", "1000", "--accelerator", "cpu", "--devices", "1"]
    parser = build_parser({"train": ("train", "n2m.training.train_cli")})
    args = apply_config(parser, parser.parse_args(argv), argv)
    assert run_train(args, extra_callbacks=(Conditioned(),)) == 0

    states, mask, texts = seen["text"]
    direct, direct_mask = HFTextEncoder(path, states.shape[1]).encode(texts)
    torch.testing.assert_close(states.cpu(), direct, atol=1e-5, rtol=1e-4)  # the batch's captions, through the encoder
    assert torch.equal(mask.cpu(), direct_mask) and mask.any(1).all()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    config = ckpt["n2m"]["config"]
    assert config["text_encoder"].startswith("hf:") and config["net"]["text_dim"] == width
    assert config["lineage"]["text_encoder_sha1"] == dir_hash(path)  # recorded by content hash
    assert ckpt["global_step"] == 3
    assert ckpt["state_dict"]["net.text_proj.0.weight"].shape[1] == width


def test_minilm_paraphrases_are_closer_than_unrelated_captions():
    path = _minilm()
    encoder = load_text_encoder("hf:all-MiniLM-L6-v2", 64)  # an installed model by name
    assert encoder.dim == 384 and text_width(f"hf:{path}") == 384
    pairs = [("a calm piano piece with soft strings", "gentle piano music with quiet strings"),
             ("an energetic rock song with loud drums", "a loud, fast rock track with heavy drumming"),
             ("a sad violin melody", "a melancholic tune played on the violin"),
             ("upbeat jazz with saxophone", "lively jazz featuring a saxophone")]
    vectors = encoder.pooled([t for pair in pairs for t in pair]).numpy().astype(np.float64)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = vectors @ vectors.T
    paraphrase = [cos[2 * k, 2 * k + 1] for k in range(len(pairs))]
    unrelated = [cos[i, j] for i in range(8) for j in range(i + 1, 8) if i // 2 != j // 2]
    assert min(paraphrase) > max(unrelated)
    assert np.mean(paraphrase) > 0.7 and np.mean(unrelated) < 0.5

"""Phase 0: SentencePiece BPE training, special ids, normalization, round trips, the converted pipeline."""

from __future__ import annotations

import glob
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.cli import main
from havoc.data.sources import PACKAGE_DIR
from havoc.errors import TokenizerError
from havoc.tokenizer import Tokenizer
from havoc.tokenizer.normalize import MATH_SYMBOLS, RULES, backend_normalizer, normalize
from havoc.tokenizer.train import (
    DOMAIN_TOKENS,
    METADATA_FILE,
    SPECIAL_TOKENS,
    TokenizerTrainConfig,
    load_tokenizer_config,
    reservoir_sample,
    train_tokenizer,
)

spm = pytest.importorskip("sentencepiece")

CORPUS = [str(PACKAGE_DIR / "data/corpus/*.txt"), str(PACKAGE_DIR / "tools/knowledge/*.md")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    tok = train_tokenizer(TokenizerTrainConfig(inputs=CORPUS, output=str(out), vocab_size=1024))
    return tok, out


def test_special_tokens_sit_at_the_fixed_ids(trained):
    tok, out = trained
    expected = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "<mask>": 4, "<reason>": 10, "</reason>": 11,
                "<tool>": 12, "</tool>": 13, "<advocate>": 14, "</advocate>": 15, "<attack>": 16, "</attack>": 17,
                "<pragmatist>": 18, "</pragmatist>": 19}
    for token, i in expected.items():
        assert tok.token_to_id(token) == i, token
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 1024
    # tags in text become their single ids; domain tokens are registered right after the fixed ones
    assert tok.encode("<reason>x</reason><tool>")[0] == 10 and tok.encode("<tool>") == [12]
    for k, token in enumerate(DOMAIN_TOKENS):
        assert tok.encode(token) == [20 + k], token
    meta = json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))
    assert meta["special_tokens"] == {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    assert meta["domain_tokens"]["box_behnken"] == tok.token_to_id("box_behnken")
    assert meta["normalization_rules"] == [list(r) for r in RULES]
    assert meta["train"]["character_coverage"] == 0.9995


def test_saved_folder_loads_and_agrees_with_sentencepiece(trained):
    tok, out = trained
    loaded = Tokenizer.load(out)
    sp = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    lines = [line.rstrip("\n") for f in glob.glob(CORPUS[0]) + glob.glob(CORPUS[1])
             for line in open(f, encoding="utf-8") if line.strip()]
    assert len(lines) > 100
    for line in lines:
        ids = loaded.encode(line)
        assert ids == sp.encode(normalize(line)), line  # the converted pipeline encodes as SentencePiece does
        assert loaded.decode(ids) == line


def test_math_symbols_are_single_tokens(trained):
    tok, _ = trained
    for ch in "±×µσ≤°√∑∂∞":
        ids = tok.encode(ch)
        assert len(ids) == 1 and ids[0] > 3, ch
    assert set(MATH_SYMBOLS) <= {tok.decode([i]) for i in range(tok.vocab_size)}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_any_unicode_string_round_trips(trained, text):
    tok, _ = trained
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == normalize(text)
    assert normalize(normalize(text)) == normalize(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["a", " ", "\r", "\n", "\r\n", "\u00a0", "\u3000", "µ", "\u2126", "℃", "≦", "＋",
                                 "▁", "<reason>", "é", "😀", "\t"]), max_size=30).map("".join))
def test_python_and_encode_time_normalizers_agree(trained, text):
    tok, _ = trained
    assert backend_normalizer().normalize_str(text) == normalize(text)
    assert tok.decode(tok.encode(text)) == normalize(text)


def test_normalization_folds_variants_only():
    assert normalize("a\r\nb\rc") == "a\nb\nc"
    assert normalize("5\u00a0µm at 20\u2103, 3\u2126") == "5 μm at 20°C, 3Ω"
    assert normalize("x ± 2σ ≤ 3 × 10°\tend  ") == "x ± 2σ ≤ 3 × 10°\tend  "


def test_reservoir_sample_is_bounded_and_seeded():
    lines = (f"line {i}" for i in range(10_000))
    a = reservoir_sample(lines, 50, seed=3)
    assert len(a) == 50 and len(set(a)) == 50
    assert a == reservoir_sample((f"line {i}" for i in range(10_000)), 50, seed=3)
    assert a != reservoir_sample((f"line {i}" for i in range(10_000)), 50, seed=4)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(TokenizerError, match="matches no file"):
        train_tokenizer(TokenizerTrainConfig(inputs=[str(tmp_path / "missing*.txt")], output=str(tmp_path)))
    with pytest.raises(TokenizerError, match="vocab_size"):
        TokenizerTrainConfig(inputs=CORPUS, vocab_size=10)
    small = tmp_path / "small.txt"
    small.write_text("just a few words\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="SentencePiece training failed"):
        train_tokenizer(TokenizerTrainConfig(inputs=[str(small)], output=str(tmp_path / "o"), vocab_size=70000))
    bad = tmp_path / "bad.yaml"
    bad.write_text("inputs: [a.txt]\nvocab: 5\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="unknown keys \\['vocab'\\]"):
        load_tokenizer_config(bad)


def test_cli_trains_from_the_shipped_config(tmp_path, capsys):
    out = tmp_path / "tok"
    assert main(["tokenizer", "train", "--config", "phase0_tokenizer_tiny", "--output", str(out),
                 "--vocab-size", "600"]) == 0
    assert "600 tokens" in capsys.readouterr().out
    assert Tokenizer.load(out).token_to_id("</pragmatist>") == 19
    assert main(["tokenizer", "train", "--input", str(tmp_path / "nothing.txt"), "--output", str(out)]) == 2
    assert "matches no file" in capsys.readouterr().err

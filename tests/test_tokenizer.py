"""The SmolLM2 tokenizer built from the GGUF, against transformers' tokenizer built from the same file and
against an independent re-implementation of llama.cpp's pre-tokenizer.

transformers' GGUF loader ignores `tokenizer.ggml.pre = "smollm"`: it splits with GPT-2's regex alone, while
llama.cpp (and the Hub's tokenizer.json for SmolLM2) first isolates every numeric character. The two agree
except where whitespace is directly followed by a numeric character ("x  42", "\n\n1", " ⅷ"): 266 of 20,000
random strings of mixed scripts differed, all of that kind. havoc follows llama.cpp, i.e. the tokenization the
model was trained with; those strings are checked against the llama.cpp reference below instead.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from havoc.errors import ModelNotFoundError, TokenizerError
from havoc.tokenizer import StreamDecoder, Tokenizer
from havoc.tokenizer.gguf_vocab import byte_alphabet

regex = pytest.importorskip("regex")  # a dependency of transformers

pytestmark = pytest.mark.model

AGREED = [
    "",
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they'll say it's fine, don't you think? We've seen it.",
    "café naïve résumé façade Ångström Øresund",
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0359\u0353 ",  # combining marks
    "日本語のテキストとカタカナ ー 中文测试，标点。한국어 텍스트",
    "🤗 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🫠",  # emoji: skin tone, ZWJ family, flag, variation selector
    "שלום עולם, مرحبا بالعالم",  # right to left
    "Привет, мир! Ελληνικά",
    "\tdef fib(n):\n\t\tif n < 2:\n\t\t\treturn n\n\t\treturn fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }\r\n",
    "x = {'a': [1, 2, 3], \"b\": None}  # comment\n\n\nprint(x)",
    "3.14159265358979323846 1,234,567,890 2024-11-21T08:55:00Z 0xDEADBEEF 1e-10 -42",
    "12345678901234567890123456789012345678901234567890",
    "v1.2.3 x2 abc123def 10%",
    "spaces:    four,        eight; trailing   ",
    "   leading spaces",
    "tabs\t\tand\nnewlines\r\n\r\nmixed \t \n",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more<|im_end|><repo_name>name<file_sep>",
    "<|im_start|> <|im_end|>  <|endoftext|>",
    "not special: <|im_start |> <im_end> <|unknown|>",
    "\u00a0non-breaking\u2003em space\u3000ideographic",
    "\x00\x01 control \x7f chars \u200b zero width",
]

DIVERGENT = ["x  42", "1  2", "\n\n1", "a\t\t7", "  1", "Â ↆ", "x ² y", "price:   100 USD"]


def _split(chunks: list[str], pattern: regex.Pattern) -> list[str]:
    """llama.cpp's unicode_regex_split step: matches and the gaps between them each become a chunk."""
    out = []
    for chunk in chunks:
        pos = 0
        for m in pattern.finditer(chunk):
            if m.start() > pos:
                out.append(chunk[pos : m.start()])
            out.append(m.group())
            pos = m.end()
        if pos < len(chunk):
            out.append(chunk[pos:])
    return out


_NUMERIC = regex.compile(r"\p{N}")
_GPT2 = regex.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")


@pytest.fixture(scope="module")
def llama_cpp_reference(hf_tokenizer):
    """ids of text without special tokens, by llama.cpp's SMOLLM pre-tokenizer (the two regexes of
    llama-vocab.cpp, applied with the `regex` module) and transformers' BPE model loaded from the GGUF."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    model = hf_tokenizer.backend_tokenizer.model
    spelling = bytes_to_unicode()

    def ids(text: str) -> list[int]:
        out = []
        for piece in _split(_split([text], _NUMERIC), _GPT2):
            out += [t.id for t in model.tokenize("".join(spelling[b] for b in piece.encode("utf-8")))]
        return out

    return ids


@pytest.fixture(scope="module")
def tok(smollm2) -> Tokenizer:
    return smollm2[1]


@pytest.mark.parametrize("text", AGREED)
def test_ids_equal_transformers(tok, hf_tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == hf_tokenizer.decode(ids, skip_special_tokens=True)


def test_numbers_after_whitespace_follow_llama_cpp(tok, hf_tokenizer, llama_cpp_reference) -> None:
    for text in DIVERGENT:
        assert tok.encode(text) == llama_cpp_reference(text), text
        assert tok.decode(tok.encode(text)) == text
    # "x  42": the double space stays one token, as in training ("ĠĠ" then "4", "2")
    assert tok.encode("x  42") == [tok.token_to_id(t) for t in ("x", "ĠĠ", "4", "2")]
    differ = [t for t in DIVERGENT if hf_tokenizer.encode(t, add_special_tokens=False) != tok.encode(t)]
    assert differ, "transformers now splits numbers like llama.cpp: move DIVERGENT into AGREED"


def _representable(tok: Tokenizer, text: str) -> bool:
    """SmolLM2's vocabulary lacks 21 of the 256 byte tokens (e.g. 0x06, and 0xF1/0xF2, which lead the
    characters of planes 4-11); BPE drops such bytes, in llama.cpp and transformers alike."""
    spelling = byte_alphabet()
    return all(tok.token_to_id(spelling[b]) is not None for b in text.encode("utf-8"))


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT)
def test_arbitrary_text(tok, hf_tokenizer, llama_cpp_reference, text: str) -> None:
    assume("<" not in text)  # special tokens are tested above; the reference knows none
    ids = tok.encode(text)
    assert ids == llama_cpp_reference(text)
    if _representable(tok, text):
        assert tok.decode(ids) == text
    if not regex.search(r"\s\p{N}", text):  # outside the divergence, transformers must agree too
        assert ids == hf_tokenizer.encode(text, add_special_tokens=False)


def test_special_tokens_and_ids(tok, hf_tokenizer) -> None:
    assert tok.vocab_size == len(tok) == 49152
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 2, 0)
    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    assert (tok.bos_token, tok.eos_token) == (hf_tokenizer.bos_token, hf_tokenizer.eos_token)
    assert tok.stop_ids == (2, 0)  # <|im_end|> (eos) then <|endoftext|>
    assert not tok.add_bos
    assert tok.encode("hi") == [6004] and tok.encode("hi", add_bos=True) == [1, 6004]
    assert tok.token_to_id("<|im_start|>") == 1 and tok.id_to_token(2) == "<|im_end|>"
    assert tok.token_to_id("Ġworld") == 905 and tok.token_to_id("no such token") is None
    assert tok.encode_batch(AGREED[:6]) == [tok.encode(t) for t in AGREED[:6]]
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.decode([5, 49152])
    with pytest.raises(TokenizerError, match="takes a str"):
        tok.encode(b"bytes")


# ------------------------------------------------------------------------------------------------ chat

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one, with 日本語 and emoji 🤗?"},
    ],
    [{"role": "user", "content": "  spaces \n\n and <|im_end|> inside  "}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_equals_transformers(tok, hf_tokenizer, messages, add_generation_prompt: bool) -> None:
    ours = tok.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    theirs = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours == theirs
    assert ours.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_chat_template_errors(tok) -> None:
    with pytest.raises(TokenizerError, match="must be a dict with a 'role'"):
        tok.apply_chat_template([{"content": "no role"}])
    with pytest.raises(TokenizerError, match="list of"):
        tok.apply_chat_template("just a string")
    strict = Tokenizer(
        tok.backend,
        eos_id=2,
        chat_template=(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}"
            "{% endif %}ok"
        ),
    )
    assert strict.apply_chat_template([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(TokenizerError, match="rejected the conversation: first message must be from the user"):
        strict.apply_chat_template([{"role": "assistant", "content": "x"}])
    with pytest.raises(TokenizerError, match="does not parse"):
        Tokenizer(tok.backend, chat_template="{% for %}").apply_chat_template([{"role": "user", "content": "x"}])
    with pytest.raises(TokenizerError, match="no chat template"):
        Tokenizer(tok.backend).apply_chat_template([{"role": "user", "content": "x"}])
    sandboxed = Tokenizer(tok.backend, chat_template="{{ messages.__class__.__mro__ }}")
    with pytest.raises(TokenizerError, match="failed to render"):
        sandboxed.apply_chat_template([{"role": "user", "content": "x"}])


# ------------------------------------------------------------------------------------------------ streaming

STREAM_TEXTS = [
    "Emoji 🤗👍🏽👨‍👩‍👧‍👦 between words, CJK 日本語, accents é è, combining e\u0301, RTL שלום.",
    "<|im_start|>assistant\nA reply 🫠 with special tokens<|im_end|>",
    "🇫🇷🇫🇷🇫🇷" * 5,
]


def _stream(tok: Tokenizer, ids: list[int], **kw) -> list[str]:
    dec = StreamDecoder(tok, **kw)
    return [dec.push(i) for i in ids] + [dec.flush()]


@pytest.mark.parametrize("text", STREAM_TEXTS)
@pytest.mark.parametrize("skip", [False, True])
def test_stream_decoder_equals_full_decode(tok, text: str, skip: bool) -> None:
    ids = tok.encode(text)
    chunks = _stream(tok, ids, skip_special_tokens=skip)
    assert "".join(chunks) == tok.decode(ids, skip_special_tokens=skip)
    assert not any("\ufffd" in c for c in chunks), chunks
    # the emoji really are split across tokens, so the test exercises held-back bytes
    assert any(c == "" for c in chunks[:-1])


def test_stream_decoder_window_stays_small(tok) -> None:
    ids = tok.encode("Streaming 🤗 text with 日本語 and numbers 12345. " * 200)
    assert len(ids) > 3000
    dec = tok.stream()
    most = 0
    out = []
    for i in ids:
        out.append(dec.push(i))
        most = max(most, dec.window)
    out.append(dec.flush())
    assert "".join(out) == tok.decode(ids)
    assert most <= 16 and dec.window == 0  # 2 * _MAX_PENDING: see havoc.tokenizer.stream


def test_stream_decoder_invalid_bytes(tok) -> None:
    # A lone UTF-8 lead byte never completed by later tokens: the U+FFFD comes out after a bounded wait.
    lead = tok.token_to_id("ð")  # byte 0xF0, the first byte of a 4-byte character
    ids = [lead] + tok.encode("abcdefghijklmnopqrstuvwxyz")
    chunks = _stream(tok, ids)
    assert "".join(chunks) == tok.decode(ids) == "\ufffdabcdefghijklmnopqrstuvwxyz"
    with pytest.raises(TokenizerError, match="outside the vocabulary"):
        tok.stream().push(10**6)


def test_stream_decoder_skipped_specials_do_not_pile_up(tok) -> None:
    dec = tok.stream(skip_special_tokens=True)
    out = [dec.push(tok.eos_id) for _ in range(100)] + [dec.push(i) for i in tok.encode(" done")] + [dec.flush()]
    assert "".join(out) == " done" and dec.window == 0
    dec = tok.stream(skip_special_tokens=True)
    for _ in range(100):
        dec.push(tok.eos_id)
        assert dec.window <= 16


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_TEXT)
def test_stream_decoder_arbitrary_text(tok, text: str) -> None:
    ids = tok.encode(text)
    chunks = _stream(tok, ids)
    assert "".join(chunks) == tok.decode(ids)
    if _representable(tok, text):
        assert "".join(chunks) == text
        assert not any("\ufffd" in c for c in chunks) or "\ufffd" in text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_stream_decoder_arbitrary_ids(tok, data) -> None:
    """Any id sequence, invalid UTF-8 included (a model can emit any bytes): the stream equals a full decode
    and the window stays bounded."""
    byte_ids = [i for i in (tok.token_to_id(c) for c in byte_alphabet().values()) if i is not None]
    token = st.one_of(st.sampled_from(byte_ids), st.integers(0, tok.vocab_size - 1))
    ids = data.draw(st.lists(token, max_size=48))
    dec = tok.stream()
    chunks = []
    for i in ids:
        chunks.append(dec.push(i))
        assert dec.window <= 16
    chunks.append(dec.flush())
    assert "".join(chunks) == tok.decode(ids)


# ------------------------------------------------------------------------------------------------ files


def test_save_load_round_trip(tok, tmp_path) -> None:
    tok.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    back = Tokenizer.load(tmp_path)
    for text in AGREED + DIVERGENT:
        assert back.encode(text) == tok.encode(text), text
    assert (back.bos_id, back.eos_id, back.pad_id, back.unk_id, back.add_bos) == (1, 2, 2, 0, False)
    assert back.stop_ids == tok.stop_ids and back.chat_template == tok.chat_template
    assert back.vocab_size == tok.vocab_size


def test_saved_folder_loads_in_transformers(tok, tmp_path) -> None:
    from transformers import AutoTokenizer

    tok.save(tmp_path)
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in AGREED + DIVERGENT:
        assert hf.encode(text, add_special_tokens=False) == tok.encode(text), text
    messages = CONVERSATIONS[1]
    theirs = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert theirs == tok.apply_chat_template(messages)


def test_load_errors(tok, tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="no tokenizer folder"):
        Tokenizer.load(tmp_path / "missing")
    with pytest.raises(TokenizerError, match="has no tokenizer.json"):
        Tokenizer.load(tmp_path)
    tok.save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{not json")
    with pytest.raises(TokenizerError, match="tokenizer_config.json is not valid JSON"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"havoc": {"version": 1, "eos_id": 10**6}}))
    with pytest.raises(TokenizerError, match=r"eos_id \(1000000\) is outside the vocabulary"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"truncated": ')
    with pytest.raises(TokenizerError, match="tokenizer.json is not a readable tokenizer.json"):
        Tokenizer.load(tmp_path)

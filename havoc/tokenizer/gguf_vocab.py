"""Build a `tokenizers` byte-level BPE from the tokenizer fields of a GGUF file.

A GGUF carries no tokenizer.json; llama.cpp stores the tokenizer as metadata:

    tokenizer.ggml.model        "gpt2": byte-level BPE (the only kind built here)
    tokenizer.ggml.pre          the pre-tokenizer the merges were learned under ("smollm", "gpt2", ...)
    tokenizer.ggml.tokens       the vocabulary in id order, spelled in GPT-2's byte alphabet
    tokenizer.ggml.merges       "left right" strings, best first
    tokenizer.ggml.token_type   1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte

The pieces map one to one onto a `tokenizers` pipeline: pre-tokenizer split → ByteLevel → BPE(vocab,
merges), ByteLevel decoder. Control tokens (`<|im_start|>`, `<|endoftext|>`, ...) become special added
tokens, so they match whole in text and `skip_special_tokens` drops them, as in transformers and llama.cpp.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as Backend

from havoc.errors import TokenizerError

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def _gpt2() -> pre_tokenizers.PreTokenizer:
    # ByteLevel(use_regex=True) applies GPT-2's split regex
    # 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ and maps bytes to the alphabet.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # llama.cpp (llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_SMOLLM) splits with "\p{N}" first, then the GPT-2
    # regex; the Hub's tokenizer.json for SmolLM2 says the same: Digits(individual_digits) + ByteLevel.
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


# tokenizer.ggml.pre -> pre-tokenizer. Only splits checked against a reference implementation are listed;
# a file naming another one is refused (TokenizerError) rather than tokenized under a guessed split, which
# would silently give ids the model never saw in training.
PRE_TOKENIZERS: dict[str, Callable[[], pre_tokenizers.PreTokenizer]] = {
    "default": _gpt2,  # what llama.cpp uses when a file names no pre-tokenizer
    "gpt2": _gpt2,
    "smollm": _digits_then_gpt2,
}


@functools.cache
def byte_alphabet() -> dict[int, str]:
    """GPT-2's map from a byte to the printable character that spells it in a byte-level vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:  # unprintable bytes are moved past the Latin-1 range, in order
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def _respell(token: str, alphabet: frozenset[str]) -> str:
    """A token written in plain text, spelled in the byte alphabet (llama.cpp stores some that way)."""
    if set(token) <= alphabet:
        return token
    spelling = byte_alphabet()
    return "".join(spelling[b] for b in token.encode("utf-8"))


def _require(metadata: Mapping[str, Any], key: str, source: str) -> Any:
    if key not in metadata:
        raise TokenizerError(f"{source}: no {key} in the metadata, so no tokenizer can be built from it")
    return metadata[key]


def backend_from_gguf(metadata: Mapping[str, Any], *, source: str = "GGUF") -> Backend:
    """A `tokenizers.Tokenizer` for the byte-level BPE a GGUF's `tokenizer.ggml.*` fields describe.

    Args:
        metadata: the file's key/value metadata; needs `tokenizer.ggml.{model,tokens,merges}`, and reads
            `tokenizer.ggml.pre` (default "default") and `tokenizer.ggml.token_type` (default: all normal).
        source: what to call the file in error messages.

    Returns:
        The backend with vocabulary, merges, pre-tokenizer, ByteLevel decoder and the control tokens
        registered as special tokens at their own ids.

    Raises:
        TokenizerError: not a byte-level BPE, an unknown pre-tokenizer, malformed merges, or tokens whose
            ids do not survive (duplicates in the vocabulary).
    """
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(
            f"{source}: tokenizer.ggml.model is {kind!r}; havoc builds byte-level BPE tokenizers ('gpt2') only"
        )
    tokens: Sequence[str] = _require(metadata, "tokenizer.ggml.tokens", source)
    merges_text: Sequence[str] = _require(metadata, "tokenizer.ggml.merges", source)
    token_types: Sequence[int] = metadata.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
    if len(token_types) != len(tokens):
        raise TokenizerError(
            f"{source}: tokenizer.ggml.token_type has {len(token_types)} entries for {len(tokens)} tokens"
        )
    pre = metadata.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise TokenizerError(
            f"{source}: tokenizer.ggml.pre is {pre!r}, a pre-tokenizer havoc does not know; known: "
            f"{sorted(PRE_TOKENIZERS)}. Add its split to havoc.tokenizer.gguf_vocab.PRE_TOKENIZERS "
            "(llama.cpp's llama-vocab.cpp lists the regexes by name)."
        )

    alphabet = frozenset(byte_alphabet().values())
    vocab: dict[str, int] = {}
    for i, (token, kind_of) in enumerate(zip(tokens, token_types)):
        # A control token keeps its plain spelling: it is matched whole in the text, never by the merges.
        key = token if kind_of == TOKEN_CONTROL else _respell(token, alphabet)
        vocab.setdefault(key, i)
    if len(vocab) != len(tokens):
        raise TokenizerError(f"{source}: the vocabulary has {len(tokens) - len(vocab)} duplicate token(s)")

    merges = []
    for m in merges_text:
        pair = m.split(" ")
        if len(pair) != 2:
            raise TokenizerError(f"{source}: malformed merge {m!r} in tokenizer.ggml.merges (expected 'left right')")
        merges.append((pair[0], pair[1]))

    backend = Backend(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = PRE_TOKENIZERS[pre]()
    backend.decoder = decoders.ByteLevel()

    pairs = list(zip(tokens, token_types))
    control = [AddedToken(t, special=True, normalized=False) for t, k in pairs if k == TOKEN_CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in pairs if k == TOKEN_USER_DEFINED]
    if control:
        backend.add_special_tokens(control)
    if user:
        backend.add_tokens(user)
    for t in (*control, *user):
        if backend.token_to_id(t.content) != vocab.get(t.content):
            raise TokenizerError(f"{source}: added token {t.content!r} did not keep its id {vocab.get(t.content)}")
    if backend.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise TokenizerError(
            f"{source}: the tokenizer has {backend.get_vocab_size(with_added_tokens=True)} tokens, "
            f"the file lists {len(tokens)}"
        )
    return backend

"""Incremental detokenization: text out as tokens come in, never half a character.

A byte-level token can end in the middle of a UTF-8 character (an emoji is 4 bytes, often 2-3 tokens), and
some decoders change a token's text depending on its neighbours (a leading-space marker is dropped at the
start of a string). So a token is not decoded alone. As in vLLM and TGI (prefix and read offsets), the
decoder keeps a short window of ids: the ids whose text it emitted last (context) and the ids not yet
emitted. Each push decodes the window with and without the pending ids and emits the difference once it no
longer ends in U+FFFD (an incomplete character). After each emission the window keeps only the ids just
emitted, so a push decodes a few tokens however long the sequence: the cost per token is constant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from havoc.errors import TokenizerError

if TYPE_CHECKING:
    from havoc.tokenizer.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"

# A UTF-8 character is at most 4 bytes, so at most 4 tokens are needed to complete one. When this many
# tokens are pending and the text still ends in U+FFFD, the bytes are really invalid (a model can emit any
# byte sequence); the U+FFFD is then emitted rather than holding text back forever. The window therefore
# never holds more than 2 * _MAX_PENDING ids (the context of the last emission plus the pending ones).
_MAX_PENDING = 8


class StreamDecoder:
    """Turns a stream of token ids into text chunks.

    Concatenating every `push` result and the final `flush` gives `tokenizer.decode(ids)` for any ids that
    decode to valid UTF-8, and never emits U+FFFD for a character that a later token completes.

    Args:
        tokenizer: the havoc `Tokenizer` whose decoder to use.
        skip_special_tokens: drop special tokens (`<|im_end|>`, ...) from the text.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False) -> None:
        self._backend = tokenizer.backend
        self._vocab_size = tokenizer.vocab_size
        self.skip_special_tokens = skip_special_tokens
        # _ids[:_read] is context (ids whose text was emitted last time), _ids[_read:] awaits emission.
        # vLLM and TGI call the two offsets prefix_offset and read_offset; here the window is trimmed at every
        # emission, so the prefix offset is always 0.
        self._ids: list[int] = []
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return self._backend.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token id.

        Args:
            token_id: the next generated id.

        Returns:
            The text completed by this token: "" while a character is still incomplete.
        """
        token_id = int(token_id)
        if not 0 <= token_id < self._vocab_size:
            raise TokenizerError(f"token id {token_id} is outside the vocabulary [0, {self._vocab_size})")
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[: self._read])
        full_text = self._decode(self._ids)
        if len(self._ids) - self._read < _MAX_PENDING:
            if full_text.endswith(_REPLACEMENT):
                return ""  # a character is still incomplete
            if len(full_text) <= len(prefix_text):
                # No new text yet (a skipped special token; a decoder that shows a token only with the next
                # one, like a leading-space marker): keep it pending rather than lose its effect.
                return ""
            cut, text = len(self._ids), full_text
        else:  # invalid bytes keep the text ending in U+FFFD: emit what is final, to bound the window
            cut, text = self._final_cut(full_text)
        # The ids just emitted become the context of the next push; older ids are no longer needed.
        del self._ids[: self._read]
        self._read = cut - self._read
        return text[len(prefix_text) :]

    def _final_cut(self, full_text: str) -> tuple[int, str]:
        """The longest head of the window whose text later tokens cannot change, and that text.

        A head is final when decoding it and the rest separately gives the whole text: then it does not
        end inside a character the rest continues. At least one pending id is emitted; when no head
        qualifies, all of them are (the text may then differ from a full decode by U+FFFD characters).
        """
        ids = self._ids
        for cut in range(len(ids) - 1, self._read, -1):
            head = self._decode(ids[:cut])
            if head + self._decode(ids[cut:]) == full_text:
                return cut, head
        return len(ids), full_text

    def flush(self) -> str:
        """Return whatever text is still held back (possibly ending in U+FFFD) and reset the decoder.

        Returns:
            The remaining text.
        """
        prefix_text = self._decode(self._ids[: self._read])
        full_text = self._decode(self._ids)
        self.reset()
        return full_text[len(prefix_text) :]

    def reset(self) -> None:
        """Forget all tokens, to decode a new sequence."""
        self._ids.clear()
        self._read = 0

    @property
    def window(self) -> int:
        """How many ids are held (bounded; for tests and diagnostics)."""
        return len(self._ids)

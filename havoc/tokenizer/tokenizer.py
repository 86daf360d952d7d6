"""`Tokenizer`: text <-> ids over the `tokenizers` library, with the special ids and chat template a model
needs, built from a GGUF's metadata or loaded from a folder.

On disk a tokenizer is two files, readable by transformers as well (`AutoTokenizer.from_pretrained(dir)`):

    tokenizer.json          the `tokenizers` pipeline (vocabulary, merges, pre-tokenizer, special tokens)
    tokenizer_config.json   special tokens, add_bos_token, chat_template, and a "havoc" block with the ids
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Backend

from havoc.errors import ModelNotFoundError, TokenizerError
from havoc.tokenizer import chat
from havoc.tokenizer.stream import StreamDecoder

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
_FORMAT_VERSION = 1

# Tokens that end a turn or a document in common chat formats (ChatML, Llama 3, Phi, Gemma, GPT-2). Any of
# them present in a vocabulary joins `stop_ids`: an instruct model ends its answer with one of these, and
# its file's eos id often names only one.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|endoftext|>", "<|end|>", "<end_of_turn>")


def _ids_of(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):  # torch tensors, numpy arrays
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    try:
        return [int(i) for i in ids]
    except (TypeError, ValueError):
        raise TokenizerError(f"token ids must be a sequence of ints, got {type(ids).__name__}") from None


class Tokenizer:
    """A tokenizer: encode, decode, special ids, stop ids, chat template.

    Build one with `Tokenizer.from_gguf_metadata` (what the GGUF importer does) or `Tokenizer.load(dir)`.

    A byte the vocabulary has no token for is dropped by `encode`, as llama.cpp and transformers do:
    SmolLM2 lacks 21 of the 256 byte tokens (control bytes such as 0x06, and 0xF1/0xF2, which begin the
    characters of Unicode planes 4-11).

    Args:
        backend: the `tokenizers.Tokenizer` pipeline; special tokens are registered in it.
        bos_id, eos_id, pad_id, unk_id: special ids (None where the model has none).
        add_bos: whether `encode` prepends `bos_id` by default.
        chat_template: the Jinja2 chat template, or None.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        bos_id: int | None = None,
        eos_id: int | None = None,
        pad_id: int | None = None,
        unk_id: int | None = None,
        add_bos: bool = False,
        chat_template: str | None = None,
    ) -> None:
        self._backend = backend
        self._vocab_size = backend.get_vocab_size(with_added_tokens=True)
        for key, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id), ("unk_id", unk_id)):
            if value is not None and not 0 <= value < self._vocab_size:
                raise TokenizerError(f"{key} ({value}) is outside the vocabulary [0, {self._vocab_size})")
        if add_bos and bos_id is None:
            raise TokenizerError("add_bos is set but the tokenizer has no bos_id")
        self._bos_id, self._eos_id, self._pad_id, self._unk_id = bos_id, eos_id, pad_id, unk_id
        self._add_bos = bool(add_bos)
        self._chat_template = chat_template or None
        stops = [] if eos_id is None else [eos_id]
        for token in END_OF_TURN_TOKENS:
            i = backend.token_to_id(token)
            if i is not None and i not in stops:
                stops.append(i)
        self._stop_ids = tuple(stops)

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_gguf_metadata(cls, metadata: Mapping[str, Any], *, source: str = "GGUF") -> Tokenizer:
        """Build the tokenizer a GGUF's `tokenizer.*` metadata describes.

        Args:
            metadata: the file's key/value metadata (arrays as lists).
            source: the file, for error messages.

        Returns:
            The tokenizer, with bos/eos/pad/unk ids, add_bos and the chat template from the metadata.

        Raises:
            TokenizerError: the fields describe a tokenizer havoc cannot build (see `gguf_vocab`).
        """
        from havoc.tokenizer.gguf_vocab import backend_from_gguf

        backend = backend_from_gguf(metadata, source=source)

        def special(key: str) -> int | None:
            value = metadata.get(f"tokenizer.ggml.{key}")
            if value is None:
                return None
            if not isinstance(value, int) or not 0 <= value < backend.get_vocab_size(with_added_tokens=True):
                raise TokenizerError(f"{source}: tokenizer.ggml.{key} ({value!r}) is not a token id of this vocabulary")
            return value

        # transformers reads a missing add_bos_token as False for byte-level BPE; so does havoc.
        return cls(
            backend,
            bos_id=special("bos_token_id"),
            eos_id=special("eos_token_id"),
            pad_id=special("padding_token_id"),
            unk_id=special("unknown_token_id"),
            add_bos=bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=metadata.get("tokenizer.chat_template"),
        )

    # ------------------------------------------------------------------------------------------ properties
    @property
    def backend(self) -> Backend:
        """The underlying `tokenizers.Tokenizer`."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return self._vocab_size

    @property
    def bos_id(self) -> int | None:
        return self._bos_id

    @property
    def eos_id(self) -> int | None:
        return self._eos_id

    @property
    def pad_id(self) -> int | None:
        return self._pad_id

    @property
    def unk_id(self) -> int | None:
        return self._unk_id

    @property
    def add_bos(self) -> bool:
        """Whether `encode` prepends BOS when not told otherwise (the file's add_bos_token flag)."""
        return self._add_bos

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Ids that end generation: eos first, then the end-of-turn tokens the vocabulary has."""
        return self._stop_ids

    @property
    def chat_template(self) -> str | None:
        return self._chat_template

    def _token(self, i: int | None) -> str | None:
        return None if i is None else self._backend.id_to_token(i)

    @property
    def bos_token(self) -> str | None:
        return self._token(self._bos_id)

    @property
    def eos_token(self) -> str | None:
        return self._token(self._eos_id)

    def token_to_id(self, token: str) -> int | None:
        """The id of `token` (a vocabulary entry, byte-alphabet spelling), or None."""
        return self._backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        """The vocabulary entry of `token_id`, or None when out of range."""
        return self._backend.id_to_token(int(token_id))

    def __len__(self) -> int:
        return self._vocab_size

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self._vocab_size}, bos_id={self._bos_id}, eos_id={self._eos_id}, "
            f"pad_id={self._pad_id}, stop_ids={self._stop_ids}, chat_template={self._chat_template is not None})"
        )

    # ------------------------------------------------------------------------------------------ text <-> ids
    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        """Token ids of `text`; special tokens written in the text (`<|im_start|>`) map to their ids.

        Args:
            text: the text.
            add_bos: prepend `bos_id`; None: the file's add_bos_token flag (`self.add_bos`).

        Returns:
            The ids.
        """
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str, got {type(text).__name__}")
        ids = self._backend.encode(text, add_special_tokens=False).ids
        return self._with_bos(ids, add_bos)

    def encode_batch(self, texts: Sequence[str], add_bos: bool | None = None) -> list[list[int]]:
        """`encode` of each text (in parallel threads of the `tokenizers` library).

        Args:
            texts: the texts.
            add_bos: as in `encode`.

        Returns:
            One id list per text.
        """
        if isinstance(texts, str) or any(not isinstance(t, str) for t in texts):
            raise TokenizerError("encode_batch takes a list of str")
        encodings = self._backend.encode_batch(list(texts), add_special_tokens=False)
        return [self._with_bos(e.ids, add_bos) for e in encodings]

    def _with_bos(self, ids: list[int], add_bos: bool | None) -> list[int]:
        if self._add_bos if add_bos is None else add_bos:
            if self._bos_id is None:
                raise TokenizerError("add_bos=True but this tokenizer has no BOS token")
            return [self._bos_id, *ids]
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; bytes that do not form valid UTF-8 become U+FFFD.

        Args:
            ids: token ids (a list, tuple, tensor or array).
            skip_special_tokens: drop special tokens from the text.

        Returns:
            The text.
        """
        ids = _ids_of(ids)
        bad = [i for i in ids if not 0 <= i < self._vocab_size]
        if bad:
            raise TokenizerError(f"token ids {bad[:5]} are outside the vocabulary [0, {self._vocab_size})")
        return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def stream(self, *, skip_special_tokens: bool = False) -> StreamDecoder:
        """A fresh `StreamDecoder` over this tokenizer (incremental decoding for streaming output)."""
        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------------------------------ chat
    def apply_chat_template(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **kwargs: Any
    ) -> str:
        """Render a conversation with the model's chat template, as transformers does.

        Args:
            messages: [{"role": "system" | "user" | "assistant", "content": "..."}, ...].
            add_generation_prompt: end with the header of the assistant's turn, so the model answers.
            **kwargs: extra template variables (`tools`, `documents`, ...).

        Returns:
            The prompt text (encode it with `encode`; its special tokens are written out in it).

        Raises:
            TokenizerError: the model has no chat template, or the template rejects the messages.
        """
        if self._chat_template is None:
            raise TokenizerError(
                "this model has no chat template (no tokenizer.chat_template in its file); "
                "format the prompt yourself and use encode()"
            )
        specials = {
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self._token(self._unk_id),
            "pad_token": self._token(self._pad_id),
        }
        return chat.render(
            self._chat_template, messages,
            add_generation_prompt=add_generation_prompt, special_tokens=specials, **kwargs,
        )

    # ------------------------------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """Write `tokenizer.json` and `tokenizer_config.json` into the folder `path` (atomically).

        Args:
            path: the folder (created if missing).
        """
        from havoc.io.atomic import atomic_write_text

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {
            # transformers' keys, so AutoTokenizer can load the folder as it is
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "unk_token": self._token(self._unk_id),
            "pad_token": self._token(self._pad_id),
            "add_bos_token": self._add_bos,
            "chat_template": self._chat_template,
            "havoc": {
                "version": _FORMAT_VERSION,
                "bos_id": self._bos_id,
                "eos_id": self._eos_id,
                "pad_id": self._pad_id,
                "unk_id": self._unk_id,
                "add_bos": self._add_bos,
            },
        }
        atomic_write_text(path / TOKENIZER_FILE, self._backend.to_str(pretty=False))
        atomic_write_text(path / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a folder written by `save` (or a transformers tokenizer folder with a tokenizer.json).

        Args:
            path: the folder.

        Returns:
            The tokenizer.

        Raises:
            ModelNotFoundError: no such folder.
            TokenizerError: a file is missing or unreadable.
        """
        path = Path(path)
        if not path.is_dir():
            raise ModelNotFoundError(f"no tokenizer folder at {path}")
        tok_file, cfg_file = path / TOKENIZER_FILE, path / CONFIG_FILE
        if not tok_file.is_file():
            raise TokenizerError(f"{path} has no {TOKENIZER_FILE}; write one with Tokenizer.save({str(path)!r})")
        try:
            backend = Backend.from_file(str(tok_file))
        except Exception as e:  # the Rust side raises its own Exception type for any parse error
            raise TokenizerError(f"{tok_file} is not a readable tokenizer.json ({e})") from None
        config: dict[str, Any] = {}
        if cfg_file.is_file():
            from havoc.safeparse import load_json, read_text

            config = load_json(read_text(cfg_file, "tokenizer config", TokenizerError), str(cfg_file), TokenizerError)
            if not isinstance(config, dict):
                raise TokenizerError(f"{cfg_file} must hold a JSON object")
        ours = config.get("havoc")
        if isinstance(ours, dict):
            ids = {k: ours.get(k) for k in ("bos_id", "eos_id", "pad_id", "unk_id")}
            add_bos = bool(ours.get("add_bos", False))
        else:  # a transformers folder: special tokens by their text

            def id_of(key: str) -> int | None:
                token = config.get(key)
                if isinstance(token, dict):  # older files: {"content": "<s>", ...}
                    token = token.get("content")
                return None if token is None else backend.token_to_id(token)

            ids = {f"{k}_id": id_of(f"{k}_token") for k in ("bos", "eos", "pad", "unk")}
            add_bos = bool(config.get("add_bos_token", False))
        try:
            return cls(backend, **ids, add_bos=add_bos, chat_template=config.get("chat_template"))
        except TokenizerError as e:
            raise TokenizerError(f"{cfg_file}: {e}") from None

"""Tokenizers: byte-level BPE built from a GGUF's metadata (via the `tokenizers` library), chat templates,
and incremental decoding for streaming.

    from havoc.tokenizer import Tokenizer
    tok = Tokenizer.load("path/to/folder")
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi"}]))
"""

from havoc.tokenizer.stream import StreamDecoder
from havoc.tokenizer.tokenizer import Tokenizer

__all__ = ["StreamDecoder", "Tokenizer"]

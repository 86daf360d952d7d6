"""LoRA in havoc: the adapter's algebra (zero at the start, merged = unmerged), PEFT's file format both ways
against transformers + peft on the same weights, bad adapters refused, and a seconds-long training smoke
(loss falls, the adapter round-trips and resumes, the grammar accepts the gold calls)."""

from __future__ import annotations

import json

import pytest
import torch

from havoc.config import ModelConfig
from havoc.errors import CheckpointError, ConfigError
from havoc.model import HavocModel
from havoc.train.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoraConfig,
    LoRALinear,
    adapter_state_dict,
    apply_lora,
    load_adapter,
    merge_lora,
    save_adapter,
)

from .gguf_files import write_tiny_gguf


def _model(seed: int = 0) -> HavocModel:
    torch.manual_seed(seed)
    return HavocModel(ModelConfig.from_preset("tiny")).eval()


def _randomize(model, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                for p in [*m.lora_A.values(), *m.lora_B.values()]:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)


TOKENS = torch.tensor([[1, 17, 42, 99, 5, 250, 7, 3, 64, 11, 200, 2, 9]])  # within the tiny GGUF's vocabulary too


def test_a_new_adapter_changes_nothing_and_merging_changes_nothing_more():
    model = _model()
    before = model(TOKENS)
    params = apply_lora(model, LoraConfig(r=4, alpha=8))
    assert params and all(p.requires_grad for p in params)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    torch.testing.assert_close(model(TOKENS), before)  # B = 0
    _randomize(model)
    adapted = model(TOKENS)
    assert (adapted - before).abs().max() > 1e-3
    assert merge_lora(model) == 4 * model.config.n_layers
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(TOKENS), adapted, rtol=1e-4, atol=1e-5)


def test_only_the_targeted_projections_get_adapters():
    model = _model()
    apply_lora(model, LoraConfig(r=2, targets=["q_proj", "v_proj", "down_proj"]))
    keys = adapter_state_dict(model)
    names = {k.split(".")[-3] for k in keys}
    assert names == {"q_proj", "v_proj", "down_proj"}
    qkv = model.layers[0].attention.wqkv
    assert [s[0] for s in qkv.slices] == ["q_proj", "v_proj"]
    c = model.config
    assert keys["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"].shape == (c.n_kv_heads * c.head_dim, 2)
    x = torch.randn(3, c.dim)
    _randomize(model)
    k_rows = slice(c.n_heads * c.head_dim, (c.n_heads + c.n_kv_heads) * c.head_dim)
    assert qkv.delta(x)[:, k_rows].abs().max() == 0  # k has no adapter


def test_save_and_load_round_trip_with_peft_names(tmp_path):
    model = _model()
    apply_lora(model, LoraConfig(r=4, alpha=8))
    _randomize(model)
    want = model(TOKENS)
    save_adapter(model, tmp_path / "ad", base_model="tiny")
    cfg = json.loads((tmp_path / "ad" / ADAPTER_CONFIG).read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 8
    other = _model()
    load_adapter(other, tmp_path / "ad")
    torch.testing.assert_close(other(TOKENS), want)
    merged = _model()
    load_adapter(merged, tmp_path / "ad", merge=True)
    torch.testing.assert_close(merged(TOKENS), want, rtol=1e-4, atol=1e-5)


def test_bad_adapters_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ConfigError, match="lora.r"):
        LoraConfig(r=0)
    with pytest.raises(ConfigError, match="targets"):
        LoraConfig(targets=["lm_head"])
    with pytest.raises(CheckpointError, match="is missing"):
        load_adapter(_model(), tmp_path)
    model = _model()
    apply_lora(model, LoraConfig(r=4))
    save_adapter(model, tmp_path / "ad")
    with pytest.raises(ConfigError, match="already"):
        apply_lora(model, LoraConfig(r=4))
    cfg = json.loads((tmp_path / "ad" / ADAPTER_CONFIG).read_text())
    (tmp_path / "ad" / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "r": 8}))
    with pytest.raises(CheckpointError, match="the model needs"):
        load_adapter(_model(), tmp_path / "ad")
    (tmp_path / "ad" / ADAPTER_CONFIG).write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(CheckpointError, match="use_dora"):
        load_adapter(_model(), tmp_path / "ad")
    (tmp_path / "ad" / ADAPTER_WEIGHTS).write_bytes(b"not safetensors")
    (tmp_path / "ad" / ADAPTER_CONFIG).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="safetensors"):
        load_adapter(_model(), tmp_path / "ad")


# ------------------------------------------------------------------------------------ parity with peft
@pytest.fixture()
def hf_pair():
    pytest.importorskip("transformers", reason="transformers is not installed")
    pytest.importorskip("peft", reason="peft is not installed: the parity test needs transformers + peft")
    from havoc.io.hf import to_transformers

    model = _model(seed=3)
    return model, to_transformers(model).eval()


def test_peft_adapter_loads_into_havoc_with_the_same_logits(hf_pair, tmp_path):
    import peft

    model, hf = hf_pair
    cfg = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"], lora_dropout=0.0)
    pm = peft.get_peft_model(hf, cfg)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pm.save_pretrained(tmp_path / "peft")
    want = pm(TOKENS).logits
    load_adapter(model, tmp_path / "peft")
    torch.testing.assert_close(model(TOKENS), want, rtol=1e-4, atol=1e-4)


def test_havoc_adapter_loads_into_peft_with_the_same_logits(hf_pair, tmp_path):
    import peft

    model, hf = hf_pair
    apply_lora(model, LoraConfig(r=4, alpha=8, targets=["q_proj", "v_proj", "up_proj", "down_proj"]))
    _randomize(model, seed=9)
    save_adapter(model, tmp_path / "ours")
    pm = peft.PeftModel.from_pretrained(hf, str(tmp_path / "ours")).eval()
    torch.testing.assert_close(pm(TOKENS).logits, model(TOKENS), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------ training smoke
def _config(tmp_path, gguf, steps: int = 16):
    from havoc.train.config import TrainConfig

    return TrainConfig.from_dict({
        "phase": "sft", "model": {"init_from": str(gguf)},
        "data": {"seq_len": 1024, "batch_size": 2, "seed": 0, "sources": [{"name": "tc", "paths": ["gen:toolcalls:12"]}]},
        "optim": {"name": "adamw", "lr": 3.0e-2, "min_lr": 3.0e-3, "warmup_steps": 2, "weight_decay": 0.0},
        "lora": {"r": 8, "alpha": 16},
        "train": {"steps": steps, "log_every": 0, "save_every": 6, "keep_last": 1, "out_dir": str(tmp_path / "run"),
                  "device": "cpu", "seed": 0},
    })


def test_lora_training_smoke_loss_falls_round_trips_and_resumes(tmp_path):
    import io

    from havoc import hub
    from havoc.train.trainer import Trainer

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", meta={"llama.context_length": 2048})
    cfg = _config(tmp_path, gguf)
    trainer = Trainer(cfg, progress=False, log_stream=io.StringIO())
    base = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    losses = trainer.fit()
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses
    for n, p in trainer.model.named_parameters():  # the model itself never moved
        if "lora_" not in n:
            assert torch.equal(p, base[n]), n
    final = tmp_path / "run" / "final"
    assert (final / ADAPTER_WEIGHTS).is_file() and not (final / "model.safetensors").exists()
    trained = trainer.model.eval()
    fresh, _ = hub.load(gguf)
    load_adapter(fresh, final)
    torch.testing.assert_close(fresh(TOKENS), trained(TOKENS))

    # resume: stopped at step 6 and continued, the losses are the uninterrupted run's
    cfg2 = _config(tmp_path / "second", gguf)
    first = Trainer(cfg2, progress=False, log_stream=io.StringIO()).fit(stop_after=6)
    rest = Trainer(cfg2, resume=True, progress=False, log_stream=io.StringIO()).fit()
    assert first + rest == pytest.approx(losses, rel=1e-5, abs=1e-6)


# ------------------------------------------------------------------------------------ at load
def test_llm_load_merges_an_adapter_so_every_decode_path_runs_it(tmp_path):
    from havoc import hub
    from havoc.llm import LLM

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    model, _ = hub.load(gguf)
    apply_lora(model, LoraConfig(r=4, alpha=8))
    _randomize(model)
    want = model(TOKENS)
    save_adapter(model, tmp_path / "ad")
    llm = LLM.load(gguf, adapter=tmp_path / "ad")
    assert llm.adapter["merged"] and llm.adapter["r"] == 4 and not llm.adapter["shipped"]
    assert not any(isinstance(m, LoRALinear) for m in llm.model.modules())  # plain weights: the C++ decoder reads them
    torch.testing.assert_close(llm.model(TOKENS), want, rtol=1e-4, atol=1e-4)
    base = LLM.load(gguf, adapter=None)
    assert base.adapter is None and (base.model(TOKENS) - want).abs().max() > 1e-3
    # greedy tokens through the engine (the C++ decoder on CPU) are those of the unmerged adapter model
    ids = [1, 17, 42, 99]
    out = llm.generate(ids, max_new_tokens=6, temperature=0.0, ignore_eos=True)
    ref = list(ids)
    with torch.no_grad():
        for _ in range(6):
            ref.append(int(model(torch.tensor([ref]))[0, -1].argmax()))
    assert out.token_ids == ref[len(ids):]
    with pytest.raises(CheckpointError, match="not a LoRA adapter"):
        LLM.load(gguf, adapter=tmp_path / "nowhere")
    assert LLM.load(gguf).adapter is None  # "auto": no adapter ships for a file path


def test_env_says_whether_an_adapter_is_active():
    from havoc import env

    info = env.collect()
    assert set(info["adapters"]) == {"smollm2"}
    assert info["adapters"]["smollm2"].startswith(("none shipped", "active by default"))
    assert "LoRA adapters" in env.format_report(info)


# ------------------------------------------------------------------------------------ the call-scoped adapter
def _masked_reference_loss(model, docs):
    """The call-span loss computed another way: each whole document through the model at once, the
    adapter's product multiplied by a per-position mask (1 from the first target's position on)."""
    mods = [m for m in model.modules() if isinstance(m, LoRALinear)]
    total = sum(int((t != -100).sum()) for _, t in docs)
    loss = 0.0
    for ids, t in docs:
        a = int((t != -100).nonzero()[0])
        mask = (torch.arange(len(ids)) >= a).float()[None, :, None]
        for m in mods:
            m.forward = lambda x, m=m: torch.nn.functional.linear(x, m.weight) + mask * m.delta(x)
        try:
            logits = model(ids[None])[0]
        finally:
            for m in mods:
                del m.forward
        keep = t != -100
        loss = loss + torch.nn.functional.cross_entropy(logits[keep], t[keep], reduction="sum") / total
    return loss


def test_the_call_span_loss_is_the_masked_adapter_loss_with_its_gradient():
    from havoc.train.lora import call_span_loss

    model = _model()
    params = apply_lora(model, LoraConfig(r=4, alpha=8, span="call"))
    _randomize(model)
    g = torch.Generator().manual_seed(3)
    docs = []
    for n, a in ((13, 9), (7, 3), (5, 0)):  # (length, first position with a target)
        ids = torch.randint(0, model.config.vocab_size, (n,), generator=g)
        t = torch.full((n,), -100)
        t[a:n - 1] = ids[a + 1:]
        docs.append((ids, t))
    pad = 4  # a padding segment with no targets
    tokens = torch.cat([d[0] for d in docs] + [torch.zeros(pad, dtype=torch.long)])
    targets = torch.cat([d[1] for d in docs] + [torch.full((pad,), -100)])
    cu = torch.tensor([0, 13, 20, 25, 29], dtype=torch.int32)

    got = call_span_loss(model, tokens[None], targets[None], cu, backward_scale=1.0)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    want = _masked_reference_loss(model, docs)
    want.backward()
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    for gp, p in zip(grads, params):
        torch.testing.assert_close(gp, p.grad, rtol=1e-4, atol=1e-6)
    assert any(p.grad.abs().max() > 0 for p in params)
    with torch.no_grad():  # evaluation: the same loss, no backward
        torch.testing.assert_close(call_span_loss(model, tokens[None], targets[None], cu), got)


def test_a_call_scoped_adapter_saves_its_span_and_peft_files_stay_peft(tmp_path):
    from havoc.train.lora import HAVOC_CONFIG, read_adapter

    model = _model()
    apply_lora(model, LoraConfig(r=4, alpha=8, span="call"))
    save_adapter(model, tmp_path / "ad")
    assert json.loads((tmp_path / "ad" / HAVOC_CONFIG).read_text()) == {"span": "call"}
    assert "span" not in json.loads((tmp_path / "ad" / ADAPTER_CONFIG).read_text())
    assert read_adapter(tmp_path / "ad")[0].span == "call"
    (tmp_path / "ad" / HAVOC_CONFIG).write_text('{"span": "everywhere"}')
    with pytest.raises(CheckpointError, match="lora.span"):
        read_adapter(tmp_path / "ad")
    with pytest.raises(ConfigError, match="lora.span"):
        LoraConfig(span="prompt")


def _greedy_split(base, adapted, ids, p, n):
    """Greedy tokens with positions < p computed by `base` and the rest by `adapted`, over one static cache."""
    cache = base.new_cache(1, len(ids) + n + 1)
    out = list(ids)
    with torch.no_grad():
        if p:
            base(torch.tensor([out[:p]]), cache=cache)
        logits = adapted(torch.tensor([out[p:]]), cache=cache)[0, -1]
        for _ in range(n):
            out.append(int(logits.argmax()))
            logits = adapted(torch.tensor([out[-1:]]), cache=cache)[0, -1]
    return out[len(ids):]


def test_the_engine_runs_a_call_scoped_adapter_from_adapter_from_on(tmp_path):
    from havoc import hub
    from havoc.engine import Engine, SamplingParams
    from havoc.errors import GenerationError
    from havoc.llm import LLM

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    model, _ = hub.load(gguf)
    apply_lora(model, LoraConfig(r=4, alpha=8, span="call"))
    _randomize(model)
    save_adapter(model, tmp_path / "ad")
    llm = LLM.load(gguf, adapter=tmp_path / "ad")
    base, _ = hub.load(gguf)
    assert llm.adapter["span"] == "call" and llm.adapted is not None
    with torch.no_grad():  # both on the same (fast) path: base's parameters would send it to autograd's
        torch.testing.assert_close(llm.model(TOKENS), base(TOKENS))  # the model itself is untouched
    assert llm.adapted.tok_embeddings.weight is llm.model.tok_embeddings.weight  # shared, not copied
    ids = [1, 17, 42, 99, 5, 250, 7, 3, 64, 11]
    params = SamplingParams(max_new_tokens=6, temperature=0.0, ignore_eos=True)
    engine = Engine(llm.model, llm.tokenizer, adapted=llm.adapted, block_size=4)

    def run(*reqs):
        while engine.has_unfinished():
            engine.step()
        return [r.output_ids for r in reqs]

    for p in (len(ids) - 1, 3, 0):
        req = engine.add_request(ids, params, adapter_from=p)
        other = engine.add_request(ids, params)  # a base request in the same steps
        got, plain = run(req, other)
        assert got == _greedy_split(base, llm.adapted, ids, p, 6), p
        assert plain == _greedy_split(base, base, ids, 0, 6)
        assert got != plain
        # the adapted request's full blocks (ids and its output) are not served to a base prompt
        longer = ids + got[:5]
        assert run(engine.add_request(longer, params)) == [_greedy_split(base, base, longer, 0, 6)]
    # a fork of a held context, as PRIME decodes a call: the context computed by the base model
    held = engine.add_request(ids[:6], SamplingParams(max_new_tokens=1), hold=True, prefill_only=True)
    run(held)
    fork = engine.add_request(ids[6:], params, parent=held, adapter_from=len(ids) - 1)
    assert run(fork) == [_greedy_split(base, llm.adapted, ids, len(ids) - 1, 6)]
    with pytest.raises(GenerationError, match="computed already"):
        engine.add_request(ids[6:], params, parent=held, adapter_from=2)
    engine.release(held)
    with pytest.raises(GenerationError, match="adapter_from must be"):
        engine.add_request(ids, params, adapter_from=len(ids) + 1)
    with pytest.raises(GenerationError, match="adapted model"):
        Engine(llm.model, llm.tokenizer).add_request(ids, params, adapter_from=2)

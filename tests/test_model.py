"""The decoder, its static KV cache and its checkpoints, on the tiny preset (random weights)."""

import os

import pytest
import torch

from havoc import CheckpointError, GenerationError, HavocModel, ModelConfig, ModelNotFoundError
from havoc.cache import StaticKVCache


def tiny(**overrides):
    torch.manual_seed(0)
    return HavocModel(ModelConfig.from_preset("tiny", **overrides)).eval()


@pytest.mark.parametrize("splits", [[37], [1] * 37, [20, 1, 1, 15], [5, 12, 20]])
@pytest.mark.parametrize("overrides", [{}, dict(rotary_dim=8), dict(n_kv_heads=6), dict(n_kv_heads=1, tie_embeddings=False)])
def test_incremental_decoding_matches_full_forward(splits, overrides):
    model = tiny(**overrides)
    tokens = torch.randint(0, model.config.vocab_size, (3, sum(splits)))
    with torch.no_grad():
        full = model(tokens)
        cache = model.new_cache(3, 64)
        parts, start = [], 0
        for n in splits:
            parts.append(model(tokens[:, start : start + n], cache=cache))
            start += n
    assert cache.length == sum(splits)
    assert (full - torch.cat(parts, 1)).abs().max().item() <= 1e-5


def test_left_padded_batch_matches_each_prompt_alone():
    model = tiny()
    lengths = [4, 17, 9]
    T = max(lengths)
    prompts = [torch.randint(3, model.config.vocab_size, (n,)) for n in lengths]
    tokens = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, p in enumerate(prompts):
        tokens[i, T - len(p):] = p
        mask[i, T - len(p):] = True
    nxt = torch.randint(3, model.config.vocab_size, (len(lengths), 3))
    with torch.no_grad():
        cache = model.new_cache(len(lengths), 32)
        batched = model(tokens, cache=cache, attention_mask=mask)
        steps = [model(nxt[:, j : j + 1], cache=cache) for j in range(3)]
        for i, p in enumerate(prompts):
            alone = model(torch.cat([p, nxt[i]])[None])
            assert (batched[i, T - len(p):] - alone[0, : len(p)]).abs().max() <= 1e-5
            for j in range(3):
                assert (steps[j][i, 0] - alone[0, len(p) + j]).abs().max() <= 1e-5


def test_logits_to_keep_and_shapes():
    model = tiny()
    tokens = torch.randint(0, model.config.vocab_size, (2, 9))
    with torch.no_grad():
        full = model(tokens)
        last = model(tokens, logits_to_keep=1)
    assert full.shape == (2, 9, model.config.vocab_size)
    torch.testing.assert_close(last[:, 0], full[:, -1])


def test_cache_capacity_and_batch_errors():
    model = tiny()
    cache = model.new_cache(2, 8)
    with torch.no_grad():
        model(torch.zeros(2, 6, dtype=torch.long), cache=cache)
        with pytest.raises(GenerationError, match="exceed the KV cache capacity of 8"):
            model(torch.zeros(2, 3, dtype=torch.long), cache=cache)
        with pytest.raises(GenerationError, match="cache holds 2 rows but the batch has 1"):
            model(torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(GenerationError, match="tokens must be"):
        model(torch.zeros(4, dtype=torch.long))
    cache.reset()
    assert cache.length == 0


def test_cache_select_rows_keeps_the_chosen_sequences():
    model = tiny()
    tokens = torch.randint(0, model.config.vocab_size, (3, 10))
    with torch.no_grad():
        cache = model.new_cache(3, 16)
        model(tokens[:, :9], cache=cache)
        cache.select_rows(torch.tensor([2, 0]))
        step = model(tokens[[2, 0], 9:], cache=cache)
        full = model(tokens[[2, 0]])
    assert (step[:, 0] - full[:, -1]).abs().max() <= 1e-5


def test_gradients_flow_to_every_parameter():
    model = tiny(tie_embeddings=False).train()
    tokens = torch.randint(0, model.config.vocab_size, (2, 12))
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, dtype):
    model = tiny().to(dtype)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    loaded = HavocModel.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype == dtype
        assert torch.equal(a[k], b[k]), k
    tokens = torch.randint(0, model.config.vocab_size, (1, 7))
    with torch.no_grad():
        assert torch.equal(model(tokens), loaded(tokens))


def test_from_pretrained_casts_on_request(tmp_path):
    tiny().save_pretrained(tmp_path)
    assert HavocModel.from_pretrained(tmp_path, dtype=torch.bfloat16).tok_embeddings.weight.dtype == torch.bfloat16


def test_bad_checkpoints_are_named(tmp_path):
    from safetensors.torch import load_file, save_file

    with pytest.raises(ModelNotFoundError, match="no checkpoint folder"):
        HavocModel.from_pretrained(tmp_path / "missing")
    ckpt = tmp_path / "ckpt"
    tiny().save_pretrained(ckpt)
    weights = ckpt / "model.safetensors"
    state = {k: v.clone() for k, v in load_file(weights).items()}  # load_file maps the file; we rewrite it

    # corrupt: truncated file
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        HavocModel.from_pretrained(ckpt)

    # a tensor missing, an unknown one added
    broken = dict(state)
    del broken["layers.1.feed_forward.w2.weight"]
    broken["layers.9.attention.wqkv.weight"] = torch.zeros(1)
    save_file(broken, weights)
    with pytest.raises(CheckpointError, match="missing tensors: layers.1.feed_forward.w2.weight; unknown tensors: layers.9"):
        HavocModel.from_pretrained(ckpt)

    # a shape mismatch
    broken = dict(state)
    broken["norm.weight"] = torch.ones(95)
    save_file(broken, weights)
    with pytest.raises(CheckpointError, match=r"norm.weight has shape \(95,\), the config expects \(96,\)"):
        HavocModel.from_pretrained(ckpt)

    # config missing / invalid
    save_file(state, weights)
    (ckpt / "config.json").write_text('{"dim": 96}')
    with pytest.raises(CheckpointError, match="config.json"):
        HavocModel.from_pretrained(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="has no config.json"):
        HavocModel.from_pretrained(ckpt)


def test_failed_save_leaves_previous_checkpoint_and_no_temporaries(tmp_path, monkeypatch):
    import safetensors.torch

    model = tiny()
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def explode(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", explode)
    with torch.no_grad():
        model.norm.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]


def test_static_cache_rejects_bad_sizes():
    cfg = ModelConfig.from_preset("tiny")
    with pytest.raises(GenerationError, match="batch_size"):
        StaticKVCache(cfg, 0, 8)
    with pytest.raises(GenerationError, match="max_len"):
        StaticKVCache(cfg, 1, 0)


def test_separate_projections_are_fused_on_load():
    from havoc.io.checkpoint import build_model

    model = tiny()
    cfg = model.config
    H, KV, hd, F = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_hidden
    separate = {}
    for name, t in model.state_dict().items():
        if name.endswith("attention.wqkv.weight"):
            prefix = name[: -len("wqkv.weight")]
            wq, wk, wv = t.split([H * hd, KV * hd, KV * hd])
            separate.update({prefix + "wq.weight": wq, prefix + "wk.weight": wk, prefix + "wv.weight": wv})
        elif name.endswith("feed_forward.w13.weight"):
            prefix = name[: -len("w13.weight")]
            w1, w3 = t.split([F, F])
            separate.update({prefix + "w1.weight": w1, prefix + "w3.weight": w3})
        else:
            separate[name] = t
    rebuilt = build_model(cfg, separate)
    for name, t in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], t), name

    del separate["layers.1.attention.wv.weight"]
    with pytest.raises(CheckpointError, match="missing tensors: layers.1.attention.wv.weight"):
        build_model(cfg, separate)


def test_saved_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        tiny().save_pretrained(tmp_path)
    finally:
        os.umask(mask)
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644

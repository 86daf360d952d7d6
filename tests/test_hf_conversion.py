"""havoc <-> transformers Llama on the same weights: identical logits, lossless name mapping."""

import pytest
import torch

from havoc import ConfigError, HavocModel, ModelConfig
from havoc.io.checkpoint import build_model
from havoc.io.hf import from_hf_state_dict, to_hf_state_dict, to_transformers

pytest.importorskip("transformers")


@pytest.mark.parametrize("overrides", [{}, dict(tie_embeddings=False), dict(n_kv_heads=6), dict(n_kv_heads=1)])
def test_transformers_gives_the_same_logits(overrides):
    torch.manual_seed(0)
    model = HavocModel(ModelConfig.from_preset("tiny", **overrides)).eval()
    hf = to_transformers(model)
    tokens = torch.randint(0, model.config.vocab_size, (2, 21))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf(tokens).logits
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_state_dict_round_trip_through_transformers_names():
    torch.manual_seed(1)
    model = HavocModel(ModelConfig.from_preset("tiny", tie_embeddings=False))
    hf_names = to_hf_state_dict(model)
    assert "model.layers.1.self_attn.k_proj.weight" in hf_names and "lm_head.weight" in hf_names
    rebuilt = build_model(model.config, from_hf_state_dict(hf_names))
    for name, t in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], t), name


def test_partial_rotary_is_refused_with_a_reason():
    model = HavocModel(ModelConfig.from_preset("tiny", rotary_dim=8))
    with pytest.raises(ConfigError, match="rotates 8 of 16 features"):
        to_transformers(model)

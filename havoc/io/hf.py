"""Conversion between havoc and transformers' Llama (same weights, either direction).

Used to run transformers on exactly the weights havoc runs (benchmarks, parity tests) and to import
Llama-family state dicts. transformers is needed only for `to_transformers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from havoc.config import ModelConfig
from havoc.errors import ConfigError

if TYPE_CHECKING:
    from havoc.model import HavocModel

# havoc name (after splitting the fused projections) -> transformers name, per layer
_LAYER_NAMES = {
    "attention.wq.weight": "self_attn.q_proj.weight",
    "attention.wk.weight": "self_attn.k_proj.weight",
    "attention.wv.weight": "self_attn.v_proj.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
}
_TOP_NAMES = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight",
              "output.weight": "lm_head.weight"}


def hf_config_dict(config: ModelConfig) -> dict[str, Any]:
    """The arguments of transformers' `LlamaConfig` for `config`."""
    if config.rotary_dim != config.head_dim:
        raise ConfigError(
            f"transformers' Llama rotates the whole head; this config rotates {config.rotary_dim} of "
            f"{config.head_dim} features (rotary_dim), which it cannot express"
        )
    return dict(
        vocab_size=config.vocab_size, hidden_size=config.dim, intermediate_size=config.ffn_hidden,
        num_hidden_layers=config.n_layers, num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_kv_heads, head_dim=config.head_dim, rope_theta=config.rope_theta,
        rms_norm_eps=config.norm_eps,
        max_position_embeddings=config.max_seq_len, tie_word_embeddings=config.tie_embeddings,
        bos_token_id=config.bos_id, eos_token_id=config.eos_id, pad_token_id=config.pad_id,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
    )


def to_hf_state_dict(model: HavocModel) -> dict[str, torch.Tensor]:
    """havoc's weights under transformers' Llama names (fused projections split; views, no copies)."""
    cfg = model.config
    q, kv, f = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.ffn_hidden
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if name.startswith("layers."):
            _, idx, rest = name.split(".", 2)
            prefix = f"model.layers.{idx}."
            if rest == "attention.wqkv.weight":
                parts = dict(zip(("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"), t.split([q, kv, kv])))
            elif rest == "feed_forward.w13.weight":
                parts = dict(zip(("feed_forward.w1.weight", "feed_forward.w3.weight"), t.split([f, f])))
            else:
                parts = {rest: t}
            out.update({prefix + _LAYER_NAMES[k]: v for k, v in parts.items()})
        else:
            out[_TOP_NAMES[name]] = t
    if cfg.tie_embeddings:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def from_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' Llama names -> havoc's (separate projections; `build_model` fuses them)."""
    layer = {v: k for k, v in _LAYER_NAMES.items()}
    top = {v: k for k, v in _TOP_NAMES.items()}
    out = {}
    for name, t in state_dict.items():
        if name in top:
            out[top[name]] = t
        elif name.startswith("model.layers."):
            _, _, idx, rest = name.split(".", 3)
            out[f"layers.{idx}.{layer.get(rest, rest)}"] = t
        else:
            out[name] = t  # unknown names are reported by build_model
    return out


def to_transformers(model: HavocModel):
    """A transformers `LlamaForCausalLM` with the same weights and dtype (eager copy)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    p = model.tok_embeddings.weight
    hf = LlamaForCausalLM(LlamaConfig(**hf_config_dict(model.config))).to(dtype=p.dtype, device=p.device)
    state = {k: v.detach().clone() for k, v in to_hf_state_dict(model).items()}
    if model.config.tie_embeddings:
        state.pop("lm_head.weight")
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (model.config.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"transformers conversion mismatch: missing {missing}, unexpected {unexpected}")
    if model.config.tie_embeddings:
        hf.tie_weights()
    return hf.eval()

"""GPU memory budget of a training run: per component, for the trainer's actual settings.

    havoc memory --config havoc-7b --gpu-gb 24            # a preset, with phase1_pretrain_7b's settings
    havoc memory --config my_run.yaml --gpu-gb 24         # a run config

What the trainer holds on the GPU, and how the planner counts it (bytes per parameter P, B rows of T
tokens, d = dim, f = ffn_hidden, L layers, V vocab):

- weights: P x (2 bf16 | 4 fp32);
- master weights: none with fp32 parameters (they are the master) and none with bf16 + stochastic
  rounding; fp32 copies of the largest tensor and its gradient exist during its step;
- gradients: all of them (P x param bytes) when stepping after backward; with the step fused into
  backward, only those in flight: the planner counts the largest tensor's gradient twice (the one being
  stepped and the next one arriving) plus one layer's worth;
- optimizer states: 8-bit AdamW = 2 bytes/param (+ 1 fp32 absmax per 256 values per state); paged states
  live in CUDA managed memory, which the driver pages out to host RAM when the card is full, so they
  are listed apart: they need not fit beside the rest, but every byte that does not fit is traffic over
  PCIe each step; torch AdamW = 8 bytes/param (fp32 m and v), always resident;
- activations with per-layer checkpointing: the saved input of each checkpointed layer (B T d x 2 bytes
  under bf16 autocast), plus one layer's full forward recomputed during its backward (q, k, v, attention
  output and its log-sum-exp, the residual and normed copies, the SwiGLU gate/up/product and the down
  projection's input: about B T (6 d + 2 (H+2KV) hd + 4 f) x 2 bytes) and its gradients (as large
  again);
- logits and loss: the fused linear cross-entropy computes the logits of a chunk of rows at a time
  (fp32); without it, the (B T, V) logits in fp32 and their gradient;
- workspace: CUDA context and cuBLAS/Triton workspace, allocator fragmentation (a fixed 1.0 GiB plus 5%).

The numbers are an estimate to plan with; the GPU run in bench/RESULTS.md measures them.
"""

from __future__ import annotations

from dataclasses import dataclass

from havoc.config import ModelConfig

GiB = 2**30


@dataclass
class Settings:
    batch_size: int = 2
    seq_len: int = 2048
    param_dtype: str = "bfloat16"
    autocast: str = "bfloat16"
    optimizer: str = "paged_adamw8bit"
    fused_step: bool = True
    checkpoint_every_n_layers: int = 1
    fused_cross_entropy: bool = True


def plan(config: ModelConfig, s: Settings) -> list[tuple[str, float, str]]:
    """[(component, GiB, where/how)] for `config` trained with `s`."""
    P = config.num_parameters()
    L, d, f, V = config.n_layers, config.dim, config.ffn_hidden, config.vocab_size
    H, KV, hd = config.n_heads, config.n_kv_heads, config.head_dim
    pb = 2 if s.param_dtype == "bfloat16" else 4
    ab = 2 if s.autocast == "bfloat16" or s.param_dtype == "bfloat16" else 4
    BT = s.batch_size * s.seq_len
    largest = max(V * d, d * (H + 2 * KV) * hd, 2 * d * f)
    layer = d * (H + 2 * KV) * hd + H * hd * d + 3 * d * f + 2 * d
    rows: list[tuple[str, float, str]] = []
    rows.append(("weights", P * pb / GiB, f"{s.param_dtype}, resident"))
    if s.param_dtype == "bfloat16":
        rows.append(("master weights", 2 * largest * 4 / GiB,
                     "none kept: stochastic rounding; fp32 copies of the stepped tensor and its gradient"))
    else:
        rows.append(("master weights", 0.0, "the fp32 parameters are the master copy"))
    if s.fused_step:
        rows.append(("gradients", (2 * largest + layer) * pb / GiB,
                     "step fused into backward: only gradients in flight (no accumulation)"))
    else:
        rows.append(("gradients", P * pb / GiB, "all parameters, kept until the step"))
    if s.optimizer in ("paged_adamw8bit", "adamw8bit"):
        states = P * 2 * (1 + 4 / 256) / GiB
        where = "CUDA managed memory (paged to host when the card is full)" if s.optimizer.startswith("paged") \
            else "resident"
        rows.append(("optimizer states (8-bit AdamW m, v)", states, where))
    else:
        rows.append(("optimizer states (AdamW fp32 m, v)", P * 8 / GiB, "resident"))
    n_ckpt = (L + s.checkpoint_every_n_layers - 1) // s.checkpoint_every_n_layers if s.checkpoint_every_n_layers else 0
    per_layer_full = BT * (6 * d + 2 * (H + 2 * KV) * hd + 4 * f) * ab
    if n_ckpt:
        saved = n_ckpt * BT * d * ab + (L - n_ckpt) * per_layer_full
        act = saved + 2 * per_layer_full
        how = f"{n_ckpt} of {L} layers checkpointed: their inputs + one layer recomputed and its gradients"
    else:
        act = L * per_layer_full + per_layer_full
        how = "no checkpointing: every layer's activations"
    rows.append(("activations", act / GiB, how))
    if s.fused_cross_entropy:
        # kernels/cross_entropy.py: chunks of C = next_pow2(BT / ceil(V / d)) rows; the gradients dW and dh
        # are computed in the forward and held until backward reaches them.
        chunk = 1 << max(0, (BT // -(-V // d)) - 1).bit_length()
        rows.append(("logits and loss", (chunk * V * ab + V * d * pb + BT * d * ab) / GiB,
                     f"fused linear cross-entropy: {chunk}-row logit chunks + its dW, dh held from forward"))
    else:
        rows.append(("logits and loss", 2 * BT * V * 4 / GiB, "full fp32 logits and their gradient"))
    resident = sum(gib for name, gib, where in rows if "managed" not in where)
    rows.append(("workspace", 1.0 + 0.05 * resident, "CUDA context, cuBLAS/Triton workspace, fragmentation"))
    return rows


def report(config: ModelConfig, s: Settings, gpu_gb: float) -> tuple[str, bool]:
    """The budget as a table and a verdict; returns (text, fits)."""
    rows = plan(config, s)
    card = gpu_gb  # the card's size in GiB as marketed (an RTX 4090's "24 GB" is 23.99 GiB)
    resident = sum(g for name, g, where in rows if "managed" not in where)
    paged = sum(g for name, g, where in rows if "managed" in where)
    lines = [
        f"{config.name}: {config.num_parameters():,} parameters; batch {s.batch_size} x {s.seq_len} tokens, "
        f"{s.param_dtype} weights, {s.optimizer}{', step fused into backward' if s.fused_step else ''}, "
        f"checkpointing every {s.checkpoint_every_n_layers or 'no'} layer(s)",
        f"{'component':38s} {'GiB':>7s}  where / how",
    ]
    for name, gib, where in rows:
        lines.append(f"{name:38s} {gib:7.2f}  {where}")
    lines.append(f"{'resident total (allocator)':38s} {resident:7.2f}")
    if paged:
        lines.append(f"{'paged optimizer states':38s} {paged:7.2f}  on top, in managed memory")
    headroom = card - resident
    fits = headroom >= 0
    if fits and paged:
        on_card = min(paged, headroom)
        verdict = (f"fits: {resident:.2f} GiB resident on a {card:g} GiB card, headroom {headroom:.2f} GiB; "
                   f"{on_card:.2f} of the {paged:.2f} GiB of paged states can stay on the card, "
                   f"{paged - on_card:.2f} GiB page to host memory")
    elif fits:
        verdict = f"fits: {resident:.2f} GiB of {card:g} GiB, headroom {headroom:.2f} GiB"
    else:
        verdict = f"does NOT fit: {resident:.2f} GiB resident needs {-headroom:.2f} GiB more than the {card:g} GiB card"
    lines.append(verdict)
    return "\n".join(lines), fits


def settings_from_train_config(cfg) -> Settings:
    """The planner's settings for a `TrainConfig`."""
    return Settings(
        batch_size=cfg.data.batch_size, seq_len=cfg.data.seq_len, param_dtype=cfg.train.param_dtype,
        autocast=cfg.train.autocast, optimizer=cfg.optim.name, fused_step=cfg.optim.fused_step,
        checkpoint_every_n_layers=cfg.train.checkpoint_every_n_layers,
    )

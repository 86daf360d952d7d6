"""HAVOC-7B training steps on one GPU with the allocator capped as on a 24 GB card.

    python bench/train_7b.py --gpu-gb 24 --batch-size 2 --seq-len 2048 --steps 10

Random init, random tokens packed as documents of `--doc-len` tokens (so the ragged attention kernel
runs as in pretraining), and exactly phase1_pretrain_7b's settings: bf16 weights with stochastic
rounding, bitsandbytes PagedAdamW8bit fused into backward, every layer checkpointed, bf16 autocast, the
fused linear cross-entropy. The PyTorch caching allocator is capped at `--gpu-gb` GiB with
`torch.cuda.set_per_process_memory_fraction`; the paged optimizer states live in CUDA managed memory
outside that allocator and are reported on top (measured as the device memory in use beyond what the
allocator reserved). Before the first step the script checks that the card has room for the paged states
beside the cap, so it never asks for more managed memory than the card has free.

Prints one markdown row for bench/RESULTS.md: peak allocator memory, paged state size, tokens/s and MFU
(6 * parameters * tokens/s plus causal attention FLOPs, over the card's dense bf16 peak).

Needs a CUDA device; written without one (GPU-unverified until a GPU session runs it).
"""

from __future__ import annotations

import argparse
import time

import torch

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "RTX 4090": 165.2, "L40S": 362.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu-gb", type=float, default=24.0)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--doc-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--preset", default="havoc-7b")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench/train_7b.py needs a CUDA device")

    from havoc.config import ModelConfig
    from havoc.model import HavocModel
    from havoc.train.memory import Settings, report
    from havoc.train.optim import ParamOptimizers
    from havoc.train.trainer import apply_activation_checkpointing

    dev = torch.device("cuda")
    total = torch.cuda.get_device_properties(dev).total_memory
    cap = args.gpu_gb * 2**30
    config = ModelConfig.from_preset(args.preset)
    P = config.num_parameters()
    paged_bytes = P * 2 * (1 + 4 / 256)
    free, _ = torch.cuda.mem_get_info(dev)
    if cap + paged_bytes > free:
        raise SystemExit(f"the card has {free / 2**30:.1f} GiB free; the cap ({args.gpu_gb} GiB) plus the paged states "
                         f"({paged_bytes / 2**30:.1f} GiB) would not fit beside each other: lower --gpu-gb")
    torch.cuda.set_per_process_memory_fraction(cap / total, dev)
    print(report(config, Settings(batch_size=args.batch_size, seq_len=args.seq_len), args.gpu_gb)[0])

    torch.manual_seed(0)
    with torch.device("meta"):
        model = HavocModel(config)
    model = model.to(dtype=torch.bfloat16).to_empty(device=dev)
    model.reset_parameters()
    model.train()
    apply_activation_checkpointing(model, 1)
    opt = ParamOptimizers(model.named_parameters(), "paged_adamw8bit", lr=3e-4, weight_decay=0.1,
                          stochastic_rounding=True)
    opt.register_fused(clip=1.0)

    B, T = args.batch_size, args.seq_len
    n_docs = -(-T // args.doc_len)
    lengths = [min(args.doc_len, T - i * args.doc_len) for i in range(n_docs)] * B
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=dev)
    positions = torch.cat([torch.arange(n) for n in lengths]).view(B, T).to(dev)

    def step() -> float:
        tokens = torch.randint(3, config.vocab_size, (B, T), device=dev)
        targets = tokens.roll(-1, 1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(tokens, targets, positions=positions, cu_seqlens=cu, max_seqlen=max(lengths))
        loss.backward()
        opt.step_count += 1
        return loss.item()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    losses = [step() for _ in range(args.steps)]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tps = B * T * args.steps / dt
    peak = torch.cuda.max_memory_allocated(dev) / 2**30
    reserved = torch.cuda.max_memory_reserved(dev) / 2**30
    free, total = torch.cuda.mem_get_info(dev)
    beyond_allocator = (total - free) / 2**30 - torch.cuda.memory_reserved(dev) / 2**30
    attn_flops = 12 * config.n_layers * config.n_heads * config.head_dim * sum(n * n / 2 for n in lengths)
    flops = (6 * P * B * T + attn_flops) * args.steps / dt  # attention: fwd 4, bwd 8 (x0.5 causal)
    name = torch.cuda.get_device_name(dev)
    peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), float("nan"))
    mfu = flops / 1e12 / peak_tflops
    print(f"losses: {[round(x, 4) for x in losses]}")
    print("| device | batch x seq | allocator cap GiB | peak allocated GiB | peak reserved GiB | "
          "managed + context beyond the allocator GiB | tokens/s | MFU |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {name} | {B} x {T} | {args.gpu_gb:g} | {peak:.2f} | {reserved:.2f} | {beyond_allocator:.2f} | "
          f"{tps:,.0f} | {mfu:.1%} |")


if __name__ == "__main__":
    main()

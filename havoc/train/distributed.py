"""Beyond one GPU: the same trainer under `torchrun`, sharded with PyTorch FSDP2 (`fully_shard`).

    torchrun --nproc_per_node 8 -m havoc.cli train --config my_run.yaml

Each block is sharded, then the root (embeddings, final norm); parameters, gradients and AdamW states
exist only as each rank's shard (DTensors), gathered per block for its forward and backward. `model.loss`
is registered as an FSDP forward method, so the training entry point unshards like `forward` does.

What changes under FSDP, and why:
- the optimizer is torch's AdamW: bitsandbytes' 8-bit states do not work on FSDP's sharded DTensor
  parameters (a config asking for them is refused with that reason);
- parameters stay fp32 (sharded master weights); bf16 compute comes from FSDP's MixedPrecisionPolicy
  (bf16 params gathered, fp32 gradient reduction) when `train.autocast` is bfloat16; stochastic
  rounding is not needed;
- the step cannot be fused into backward (FSDP reduce-scatters gradients after the layer's backward);
- every rank reads its own data stream (seed + rank), and its position goes into its own state file;
  model weights are gathered to rank 0 and saved in the usual single-file format, so a checkpoint loads
  in `havoc generate` and a resume reshards it.

Tested on CPU with two processes and the gloo backend; NCCL on GPUs is the same code, GPU-unverified.
"""

from __future__ import annotations

import os

import torch

from havoc.errors import ConfigError


def world() -> tuple[int, int]:
    """(rank, world_size), initialising the process group when launched by torchrun with more than one rank."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def check_config(cfg) -> None:
    """Refuse the settings FSDP cannot honour (see the module doc)."""
    if cfg.optim.name != "adamw":
        raise ConfigError(
            f"optim.name {cfg.optim.name!r} under FSDP: bitsandbytes' 8-bit states do not work with FSDP's sharded "
            "parameters; use optim.name: adamw when training on several ranks"
        )
    if cfg.optim.fused_step:
        raise ConfigError("optim.fused_step is not available under FSDP (gradients are reduce-scattered per layer)")
    if cfg.train.param_dtype != "float32":
        raise ConfigError("under FSDP keep train.param_dtype float32 (sharded master weights); bf16 compute comes "
                          "from train.autocast: bfloat16")


def shard(model, cfg) -> None:
    """fully_shard every block, then the root; `loss` unshards like `forward`."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mp = MixedPrecisionPolicy()
    if cfg.train.autocast == "bfloat16":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    register_fsdp_forward_method(model, "loss")


def full_state_dict(model) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, on rank 0 (empty elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    """Load unsharded weights (present on every rank) into the sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def mean_across_ranks(value: float) -> float:
    import torch.distributed as dist

    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()

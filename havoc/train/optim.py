"""Per-parameter optimizers, 8-bit paged AdamW, stochastic rounding to bf16, the LR schedule.

Every parameter gets its own optimizer instance (torch's AdamW, or bitsandbytes' AdamW8bit /
PagedAdamW8bit). That one design serves both ways of stepping:

- after backward, `step()` walks every parameter (gradient accumulation and global-norm clipping work
  as usual);
- fused into backward (`fused=True`), each parameter steps from its post-accumulate-grad hook the moment
  its gradient is complete, and the gradient is freed at once, so the gradients of the whole model never
  exist together (HAVOC-7B's bf16 gradients alone are 11.1 GiB). Ordinary accumulation is impossible
  then, and clipping is per parameter tensor (no global norm exists before the step).

Updates must not vanish in bf16. 8-bit AdamW's update at lr 3e-5 is about 3e-5 per element; a bf16
weight of 0.02 has a spacing of 1.2e-4, so round-to-nearest drops almost every such update. Two cures:
fp32 parameters (master weights; compute runs under bf16 autocast), or bf16 parameters with stochastic
rounding: the step runs on an fp32 copy of one parameter at a time, and the result is rounded down or up
with probability proportional to the distance, so the expected weight is the fp32 one. The rounding
noise comes from a generator seeded by (seed, step, parameter index): a resumed run rounds exactly as the
uninterrupted one did.

No weight decay on norms (nor on any 1-D parameter).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch

from havoc.errors import ConfigError

OPTIMIZERS = ("paged_adamw8bit", "adamw8bit", "adamw")


def stochastic_round_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round fp32 `x` to bf16 up or down at random, with probability proportional to the distance.

    bf16 is the top 16 bits of fp32: adding uniform noise to the low 16 bits and truncating rounds up
    with probability (low bits) / 2^16. E[result] == x (exactly, for finite x away from the bf16 max).
    """
    bits = x.float().contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, bits.shape, dtype=torch.int32, device=bits.device, generator=generator)
    rounded = (bits + noise) & -65536  # clear the low 16 bits (0xFFFF0000 as a signed int32)
    return rounded.view(torch.float32).to(torch.bfloat16)


def no_decay(name: str, p: torch.Tensor) -> bool:
    return p.ndim < 2 or "norm" in name


class ParamOptimizers:
    """One optimizer per parameter (see the module doc).

    Args:
        named_params: the model's (name, parameter) pairs that train.
        name: "paged_adamw8bit", "adamw8bit" (bitsandbytes) or "adamw" (torch).
        lr, betas, eps, weight_decay: AdamW's settings (decay skipped for norms and 1-D parameters).
        stochastic_rounding: step bf16 parameters in fp32 and round stochastically (see module doc).
        seed: seeds the rounding noise.
    """

    def __init__(
        self,
        named_params: Iterable[tuple[str, torch.nn.Parameter]],
        name: str = "adamw",
        *,
        lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        stochastic_rounding: bool = False,
        seed: int = 0,
    ) -> None:
        if name not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
        self.name = name
        self.params = dict(named_params)
        self.stochastic_rounding = stochastic_rounding
        self.seed = seed
        self.step_count = 0
        cls = _optimizer_class(name)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        for pname, p in self.params.items():
            wd = 0.0 if no_decay(pname, p) else weight_decay
            with warnings.catch_warnings():  # bitsandbytes warns once per optimizer that CPU is not paged
                warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
                self.optimizers[pname] = cls([{"params": [p], "weight_decay": wd}], lr=lr, betas=tuple(betas), eps=eps)
        self._index = {pname: i for i, pname in enumerate(self.params)}

    def set_lr(self, lr: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def step_param(self, pname: str, clip: float = 0.0) -> None:
        """Step one parameter from its .grad, then free the gradient."""
        p = self.params[pname]
        if p.grad is None:
            return
        if clip > 0:
            torch.nn.utils.clip_grad_norm_([p], clip)
        opt = self.optimizers[pname]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Paged optimizers are not supported on CPU")
            if self.stochastic_rounding and p.dtype == torch.bfloat16:
                p.data = p.data.float()
                p.grad = p.grad.float()
                opt.step()
                g = torch.Generator(device=p.device)
                g.manual_seed(hash((self.seed, self.step_count, self._index[pname])) & 0x7FFF_FFFF_FFFF)
                p.data = stochastic_round_bf16(p.data, g)
            else:
                opt.step()
        p.grad = None

    def step(self) -> None:
        """Step every parameter (after backward; the non-fused path)."""
        for pname in self.params:
            self.step_param(pname)
        self.step_count += 1

    def register_fused(self, clip: float = 0.0) -> list:
        """Step each parameter inside backward, as soon as its gradient is accumulated (see module doc)."""
        handles = []
        for pname, p in self.params.items():
            handles.append(p.register_post_accumulate_grad_hook(lambda _p, n=pname: self.step_param(n, clip)))
        return handles

    def state_dict(self) -> dict:
        """Per-parameter optimizer states; FSDP's DTensor states are stored as this rank's local shards."""
        return {"step_count": self.step_count, "name": self.name,
                "optimizers": {n: _local(o.state_dict()) for n, o in self.optimizers.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["name"] != self.name or set(state["optimizers"]) != set(self.optimizers):
            raise ConfigError(
                f"the checkpoint's optimizer ({state['name']}, {len(state['optimizers'])} parameters) does not match "
                f"this run's ({self.name}, {len(self.optimizers)} parameters)"
            )
        self.step_count = state["step_count"]
        for n, opt in self.optimizers.items():
            p = self.params[n]
            # Optimizers cast loaded float states to the parameter's dtype. Stochastically rounded bf16
            # parameters step as fp32 (their states are fp32): load them as fp32 too, or a resume would
            # round the states to bf16 and drift from the uninterrupted run.
            swap = self.stochastic_rounding and p.dtype == torch.bfloat16
            if swap:
                p.data = p.data.float()
            try:
                opt.load_state_dict(_reshard(state["optimizers"][n], p))
            finally:
                if swap:
                    p.data = p.data.to(torch.bfloat16)  # exact: the values were bf16
            if self.name == "paged_adamw8bit":
                _repage(opt)


def _local(state: dict) -> dict:
    """An optimizer state_dict with DTensors replaced by their local shards (loadable with weights_only)."""
    def conv(v):
        return v.to_local() if hasattr(v, "to_local") else v

    return {**state, "state": {k: {kk: conv(vv) for kk, vv in st.items()} for k, st in state["state"].items()}}


def _reshard(state: dict, p: torch.Tensor) -> dict:
    """The inverse of `_local` for parameter `p` (a no-op unless p is a DTensor)."""
    if not hasattr(p, "device_mesh"):
        return state
    from torch.distributed.tensor import DTensor

    def conv(v):
        if torch.is_tensor(v) and v.shape == p.to_local().shape and v.ndim > 0:
            return DTensor.from_local(v, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
        return v

    return {**state, "state": {k: {kk: conv(vv) for kk, vv in st.items()} for k, st in state["state"].items()}}


def _optimizer_class(name: str):
    if name == "adamw":
        return lambda groups, **kw: torch.optim.AdamW(groups, foreach=False, **kw)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(f"optimizer {name!r} needs bitsandbytes: pip install 'havoc[train]' (or use adamw)") from None
    return bnb.optim.PagedAdamW8bit if name == "paged_adamw8bit" else bnb.optim.AdamW8bit


def _repage(opt) -> None:
    """Move a loaded paged optimizer's state tensors back into paged (CUDA managed) memory.

    `load_state_dict` creates ordinary device tensors; bitsandbytes allocates paged ones only when it
    creates a state. GPU-unverified: no CUDA device has run this yet.
    """
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            if p.device.type != "cuda":
                continue
            for key in ("state1", "state2"):
                t = state.get(key)
                if torch.is_tensor(t) and t.numel() == p.numel():
                    paged = opt.get_state_buffer(p, dtype=t.dtype)
                    paged.copy_(t.view_as(paged))
                    state[key] = paged


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warmup to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))

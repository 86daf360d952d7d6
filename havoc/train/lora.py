"""LoRA adapters on havoc's projections, saved and loaded in PEFT's format.

    y = W x + (alpha / r) * B (A x)          A: (r, in), B: (out, r), B = 0 at the start (Hu et al., 2021)

havoc fuses q/k/v into `wqkv` and gate/up into `w13`; PEFT (and every Llama adapter in the wild) adapts
q_proj, k_proj, v_proj, gate_proj and up_proj apart. So one `LoRALinear` carries one (A, B) pair per
slice of its output rows: wqkv's rows are q, k, v; w13's are gate, up. The adapter of a slice is exactly
PEFT's adapter of that projection, which makes the files interchangeable:

    adapter_model.safetensors   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight  (r, in)
                                base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight  (out, r)
    adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "target_modules", ...}

`apply_lora` swaps the projections in place (the base weight stays the same Parameter, under the same
name, frozen); `merge_lora` folds the products into the weights and puts plain `Linear`s back, which is
how an adapter reaches the C++ decoder (it reads the weights: merged, nothing is dropped).

An adapter's span says where it is active. "all": every position (merged into the model). "call": only
from the last token of `<tool>` to the end of the call PRIME decodes; the context before it, and so its
K/V, stay the base model's (trained so: `havoc.train.trainer` runs the context through the frozen model and
the call with the adapter; served so: the engine runs an adapted copy of the model on those rows alone,
`havoc.engine.Engine(adapted=...)`). PEFT has no such field: the span goes in `havoc_adapter.json` beside
PEFT's files, which PEFT ignores (it loads the same adapter as an everywhere one).
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from havoc import ops
from havoc.errors import CheckpointError, ConfigError

ADAPTER_WEIGHTS, ADAPTER_CONFIG = "adapter_model.safetensors", "adapter_config.json"
HAVOC_CONFIG = "havoc_adapter.json"  # {"span": "call"}; absent: "all"
SPANS = ("all", "call")
# Adapters the package ships, per known model: on by default wherever that model runs (`--no-adapter` off).
# An adapter ships only when the per-call report shows it writes more calls right on first try than the
# model alone (issue 15). smollm2-toolcalls: phase2_toolcalls_lora_smollm2 at step 400, span "call"
# (bench/RESULTS.md has its figures against the model alone).
SHIPPED = {"smollm2": "adapters/smollm2-toolcalls"}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# havoc module (under layers.{i}) -> its output slices, each with its PEFT module name under layers.{i}
_MODULES = {
    "attention.wqkv": (("q_proj", "self_attn"), ("k_proj", "self_attn"), ("v_proj", "self_attn")),
    "attention.wo": (("o_proj", "self_attn"),),
    "feed_forward.w13": (("gate_proj", "mlp"), ("up_proj", "mlp")),
    "feed_forward.w2": (("down_proj", "mlp"),),
}


@dataclass
class LoraConfig:
    """Rank, scale and targets of an adapter (PEFT's `r`, `lora_alpha`, `lora_dropout`, `target_modules`)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(TARGETS))
    span: str = "all"

    def __post_init__(self) -> None:
        if self.span not in SPANS:
            raise ConfigError(f"lora.span must be one of {', '.join(SPANS)}, got {self.span!r}")
        if isinstance(self.r, bool) or not isinstance(self.r, int) or not 1 <= self.r <= 4096:
            raise ConfigError(f"lora.r must be an integer in [1, 4096], got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not (
                math.isfinite(self.alpha) and self.alpha > 0):
            raise ConfigError(f"lora.alpha must be a positive number, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"lora.targets must be a non-empty list of {', '.join(TARGETS)}; unknown: {unknown}")

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    def to_peft(self, base_model: str = "") -> dict:
        """adapter_config.json as PEFT writes it for a causal LM."""
        return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model, "r": self.r,
                "lora_alpha": self.alpha, "lora_dropout": self.dropout, "target_modules": sorted(self.targets),
                "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                "modules_to_save": None, "use_rslora": False, "use_dora": False, "layers_to_transform": None,
                "rank_pattern": {}, "alpha_pattern": {}}

    @classmethod
    def from_peft(cls, data: dict, where: str = ADAPTER_CONFIG) -> LoraConfig:
        if data.get("peft_type") != "LORA":
            raise CheckpointError(f"{where}: peft_type is {data.get('peft_type')!r}; only LORA adapters load")
        for key, bad in (("use_dora", True), ("use_rslora", True), ("fan_in_fan_out", True)):
            if data.get(key) == bad:
                raise CheckpointError(f"{where}: {key} adapters are not supported")
        if data.get("bias", "none") != "none" or data.get("rank_pattern") or data.get("alpha_pattern") \
                or data.get("layers_to_transform") is not None or data.get("modules_to_save"):
            raise CheckpointError(f"{where}: only plain LoRA (no bias, rank/alpha patterns, layer subsets or "
                                  "modules_to_save) is supported")
        targets = data.get("target_modules")
        if isinstance(targets, str):
            raise CheckpointError(f"{where}: target_modules as a regex ({targets!r}) is not supported; list the names")
        try:
            return cls(r=data["r"], alpha=data["lora_alpha"], dropout=data.get("lora_dropout", 0.0),
                       targets=list(targets or []))
        except KeyError as e:
            raise CheckpointError(f"{where}: missing {e}") from None
        except ConfigError as e:
            raise CheckpointError(f"{where}: {e}") from None


class LoRALinear(nn.Module):
    """A frozen projection plus one low-rank product per adapted slice of its output rows.

    Args:
        base: the projection (its weight is kept, the same Parameter).
        slices: (name, first row, rows) per adapted slice; rows no slice covers get no adapter.
        cfg: rank, scale, dropout.
    """

    def __init__(self, base: nn.Module, slices: list[tuple[str, int, int]], cfg: LoraConfig) -> None:
        super().__init__()
        self.weight = base.weight
        self.weight.requires_grad_(False)
        self.out_features, self.in_features = self.weight.shape
        self.slices = slices
        self.scale = cfg.scale
        self.active = True  # False: the base projection alone (`lora_active`)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout else nn.Identity()
        w = self.weight
        self.lora_A = nn.ParameterDict({n: nn.Parameter(torch.empty(cfg.r, self.in_features, dtype=w.dtype, device=w.device))
                                        for n, _, _ in slices})
        self.lora_B = nn.ParameterDict({n: nn.Parameter(torch.zeros(rows, cfg.r, dtype=w.dtype, device=w.device))
                                        for n, _, rows in slices})
        for a in self.lora_A.values():  # PEFT's default init: kaiming-uniform A, zero B (the adapter starts as 0)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapters' contribution, (..., out_features)."""
        names = [n for n, _, _ in self.slices]
        a = torch.cat([self.lora_A[n] for n in names])  # (slices * r, in): one product for every slice
        xa = self.dropout(x) @ a.to(x.dtype).t()  # (..., slices * r)
        parts, at = [], 0
        r = xa.shape[-1] // len(names)
        for i, (name, start, rows) in enumerate(self.slices):
            if start > at:
                parts.append(xa.new_zeros(*xa.shape[:-1], start - at))
            parts.append(xa[..., i * r:(i + 1) * r] @ self.lora_B[name].to(x.dtype).t())  # (..., rows)
            at = start + rows
        if at < self.out_features:
            parts.append(xa.new_zeros(*xa.shape[:-1], self.out_features - at))
        return torch.cat(parts, dim=-1) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = ops.linear(x, self.weight)
        return y + self.delta(x) if self.active else y

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        w = self.weight.detach().clone()
        for name, start, rows in self.slices:
            b, a = self.lora_B[name].float(), self.lora_A[name].float()
            w[start:start + rows] += (self.scale * (b @ a)).to(w.dtype)
        return w


@contextlib.contextmanager
def lora_active(model, active: bool):
    """Within the block, the model's adapters are on (`active`) or off (the base model), then as before."""
    mods = [m for _, m in _adapted(model)]
    before = [m.active for m in mods]
    for m in mods:
        m.active = active
    try:
        yield
    finally:
        for m, b in zip(mods, before):
            m.active = b


def call_span_loss(model, tokens: torch.Tensor, targets: torch.Tensor, cu_seqlens: torch.Tensor, *,
                   backward_scale: float | None = None, autocast=contextlib.nullcontext, device=None,
                   ignore_index: int = -100) -> torch.Tensor:
    """The mean loss over the target tokens of packed documents, for an adapter of span "call".

    Per document (a segment of `cu_seqlens` over the flattened batch): its context, up to the first
    position with a target (the last token of `<tool>`), runs through the frozen model with the adapter
    off and no graph, into a KV cache; the rest runs with the adapter on, attending over that cache, and
    its targets give the loss. So the context's K/V are the base model's, as the engine serves the adapter
    (`Engine(adapted=...)`), and only the call's tokens pay for backward. With `backward_scale`, each
    document's share of the loss times it is backpropagated as soon as it is computed (the graphs are
    never held together). Returns the loss (fp32 scalar, detached).
    """
    device = device or tokens.device
    tokens, targets = tokens.reshape(-1), targets.reshape(-1)
    cu = [int(c) for c in cu_seqlens]
    total = int((targets != ignore_index).sum())
    out = torch.zeros((), dtype=torch.float32)
    for s, e in zip(cu[:-1], cu[1:]):
        t = targets[s:e]
        hit = (t != ignore_index).nonzero()
        if not len(hit):
            continue  # padding, or a document without targets
        a = int(hit[0])
        cache = model.new_cache(1, e - s)
        if a:
            with torch.no_grad(), lora_active(model, False), autocast():
                model(tokens[s:s + a][None].to(device), cache=cache, logits_to_keep=1)
        with lora_active(model, True), autocast():
            h = model.norm(model._trunk(tokens[s + a:e][None].to(device), None, cache, None))
            loss = ops.linear_cross_entropy(h, model.lm_head_weight, t[a:][None].to(device), ignore_index=ignore_index)
        part = loss.float() * (int((t[a:] != ignore_index).sum()) / total)
        if backward_scale is not None and torch.is_grad_enabled():
            (part * backward_scale).backward()
        out = out + part.detach().cpu()
    return out


def shipped_adapter(model_name: str) -> Path | None:
    """The folder of the adapter shipped for a known model name, or None when none ships."""
    rel = SHIPPED.get(model_name)
    if rel is None:
        return None
    folder = Path(__file__).resolve().parent.parent / rel
    return folder if (folder / ADAPTER_CONFIG).is_file() and (folder / ADAPTER_WEIGHTS).is_file() else None


def _slices(model, module: str, cfg: LoraConfig) -> list[tuple[str, int, int]]:
    c = model.config
    q, kv, f = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.ffn_hidden
    rows = {"attention.wqkv": ((0, q), (q, kv), (q + kv, kv)), "attention.wo": ((0, c.dim),),
            "feed_forward.w13": ((0, f), (f, f)), "feed_forward.w2": ((0, c.dim),)}[module]
    return [(name, start, n) for (name, _), (start, n) in zip(_MODULES[module], rows) if name in cfg.targets]


def _parent(model, path: str):
    obj = model
    *head, last = path.split(".")
    for part in head:
        obj = getattr(obj, part)
    return obj, last


def apply_lora(model, cfg: LoraConfig) -> list[nn.Parameter]:
    """Freeze the model and put adapters on its targeted projections (in place).

    Returns:
        The adapter's parameters (the only ones that train).
    """
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ConfigError("the model already has LoRA adapters")
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for i in range(model.config.n_layers):
        for module in _MODULES:
            slices = _slices(model, module, cfg)
            if not slices:
                continue
            parent, attr = _parent(model, f"layers.{i}.{module}")
            lora = LoRALinear(getattr(parent, attr), slices, cfg)
            setattr(parent, attr, lora)
            params += list(lora.lora_A.values()) + list(lora.lora_B.values())
    model.lora_config = cfg
    return params


def _adapted(model) -> list[tuple[str, LoRALinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


def _peft_key(layer: int, name: str, which: str) -> str:
    group = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
    return f"base_model.model.model.layers.{layer}.{group}.{name}.lora_{which}.weight"


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The adapter's tensors under PEFT's key names."""
    out = {}
    for path, m in _adapted(model):
        layer = int(path.split(".")[1])
        for name, _, _ in m.slices:
            out[_peft_key(layer, name, "A")] = m.lora_A[name].detach()
            out[_peft_key(layer, name, "B")] = m.lora_B[name].detach()
    if not out:
        raise ConfigError("the model has no LoRA adapters to save")
    return out


def save_adapter(model, folder: str | Path, base_model: str = "") -> Path:
    """Write adapter_model.safetensors and adapter_config.json (PEFT's format) into `folder` (atomically)."""
    from safetensors.torch import save

    from havoc.io.atomic import atomic_write_bytes, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    atomic_write_bytes(folder / ADAPTER_WEIGHTS, save(tensors))
    atomic_write_text(folder / ADAPTER_CONFIG, json.dumps(model.lora_config.to_peft(base_model), indent=2))
    if model.lora_config.span != "all":
        atomic_write_text(folder / HAVOC_CONFIG, json.dumps({"span": model.lora_config.span}))
    elif (folder / HAVOC_CONFIG).exists():
        (folder / HAVOC_CONFIG).unlink()
    return folder


def read_adapter(folder: str | Path) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """An adapter folder's config and tensors (PEFT's names), checked for form."""
    from safetensors.torch import load_file

    folder = Path(folder)
    for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / f).is_file():
            raise CheckpointError(f"{folder} is not a LoRA adapter: {f} is missing")
    try:
        data = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except ValueError as e:
        raise CheckpointError(f"{folder / ADAPTER_CONFIG}: not JSON ({e})") from None
    cfg = LoraConfig.from_peft(data, str(folder / ADAPTER_CONFIG))
    if (folder / HAVOC_CONFIG).is_file():
        try:
            extra = json.loads((folder / HAVOC_CONFIG).read_text(encoding="utf-8"))
            cfg = replace(cfg, span=extra.get("span", "all") if isinstance(extra, dict) else None)
        except (ValueError, ConfigError) as e:
            raise CheckpointError(f"{folder / HAVOC_CONFIG}: {e}") from None
    try:
        tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{folder / ADAPTER_WEIGHTS}: not a readable safetensors file ({e})") from None
    # PEFT writes ".lora_A.weight"; an adapter saved with its adapter name keeps ".lora_A.default.weight"
    return cfg, {k.replace(".default.weight", ".weight"): v for k, v in tensors.items()}


def load_adapter(model, folder: str | Path, *, merge: bool = False) -> LoraConfig:
    """Put the adapter of `folder` on `model` (in place); with `merge`, fold it into the weights.

    Raises:
        CheckpointError: not an adapter, a missing or unexpected tensor, or a shape that does not fit.
    """
    cfg, tensors = read_adapter(folder)
    apply_lora(model, cfg)
    want = adapter_state_dict(model)
    missing = sorted(set(want) - set(tensors))
    unexpected = sorted(set(tensors) - set(want))
    if missing or unexpected:
        raise CheckpointError(f"{folder}: the adapter does not fit this model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}{'...' if len(missing) + len(unexpected) > 6 else ''})")
    with torch.no_grad():
        for key, t in want.items():
            if tensors[key].shape != t.shape:
                raise CheckpointError(f"{folder}: {key} is {tuple(tensors[key].shape)}, the model needs {tuple(t.shape)}")
            t.copy_(tensors[key].to(t.dtype))
    if merge:
        merge_lora(model)
    return cfg


def adapted_copy(model, folder: str | Path):
    """A copy of `model` with the adapter of `folder` merged into its projections; the copy shares every
    other tensor (embeddings, norms) with `model`, which stays as it was. Returns (copy, LoraConfig)."""
    import copy

    projections = tuple(f".{m}." for m in _MODULES)
    memo = {id(p): p for name, p in model.named_parameters() if not any(s in f".{name}" for s in projections)}
    memo.update({id(b): b for _, b in model.named_buffers()})
    twin = copy.deepcopy(model, memo)
    cfg = load_adapter(twin, folder, merge=True)
    return twin.eval(), cfg


@torch.no_grad()
def merge_lora(model) -> int:
    """Fold every adapter into its projection's weight and put a plain `Linear` back; returns how many."""
    from havoc.model import Linear

    n = 0
    for path, m in _adapted(model):
        parent, attr = _parent(model, path)
        merged = m.merged_weight()
        lin = Linear(m.in_features, m.out_features).to(dtype=merged.dtype, device=merged.device)
        lin.weight = nn.Parameter(merged, requires_grad=False)
        setattr(parent, attr, lin)
        n += 1
    model.merged_adapter = getattr(model, "lora_config", None)
    return n

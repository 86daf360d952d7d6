"""Run configs of the trainer: nested dataclasses read from YAML, every key checked.

    phase: pretrain | sft            # sft also serves phase 3 (polish): same loss, other data and lr
    model: {preset, overrides, init_from}
    tokenizer: FOLDER                # ignored with init_from, which brings its own
    data: {seq_len, batch_size, seed, sources: [{name, paths, weight}], eval_sources: [...]}
    optim: {name, lr, min_lr, warmup_steps, betas, eps, weight_decay, grad_clip, fused_step}
    train: {steps, grad_accum, param_dtype, autocast, stochastic_rounding, checkpoint_every_n_layers,
            eval_every, eval_batches, log_every, save_every, keep_last, out_dir, seed, device}
    lora: {r, alpha, dropout, targets, span}  # optional: a LoRA adapter on the frozen model (havoc.train.lora);
                                     # span "call": active on the loss tokens only, the context stays the base's

A source path `gen:toolcalls:N` (or `gen:toolcalls:N:dev`) is N verified tool-call examples of that split
from `havoc.train.toolcalls`, made with the model's tokenizer and `data.seed` into out_dir/data/ when the run
starts (the same file again on resume).

Relative paths in a config file are taken from the current directory; `pkg:REL` names a file inside the
installed package (the tiny configs read the corpus shipped in havoc/data/corpus that way). A bare name
(`phase1_pretrain_tiny`) names a config shipped in havoc/train/configs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havoc.errors import ConfigError
from havoc.safeparse import short
from havoc.train.optim import OPTIMIZERS

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class SourceConfig:
    name: str
    paths: list[str]
    weight: float = 1.0


@dataclass
class DataConfig:
    seq_len: int = 2048
    batch_size: int = 1  # micro-batch (rows per forward)
    seed: int = 0
    sources: list[SourceConfig] = field(default_factory=list)
    eval_sources: list[SourceConfig] = field(default_factory=list)


@dataclass
class ModelSection:
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None  # a havoc checkpoint folder, a .gguf, or a known name ("smollm2")


@dataclass
class OptimConfig:
    name: str = "paged_adamw8bit"
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    fused_step: bool = False  # step inside backward (no gradient accumulation; clipping per tensor)


@dataclass
class TrainSection:
    steps: int = 1000
    grad_accum: int = 1
    param_dtype: str = "float32"  # float32 (master weights) or bfloat16
    autocast: str = "none"  # bfloat16 or none
    stochastic_rounding: bool = True  # with bfloat16 parameters
    checkpoint_every_n_layers: int = 0  # activation checkpointing of every n-th layer; 0: off
    eval_every: int = 0
    eval_batches: int = 2
    log_every: int = 1
    save_every: int = 0  # 0: only at the end
    keep_last: int = 2
    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    threads: int = 0  # CPU threads for torch; 0: torch's default
    memory_fraction: float = 0.0  # >0: cap the CUDA caching allocator (torch.cuda.set_per_process_memory_fraction)


@dataclass
class LoraSection:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                        "down_proj"])
    span: str = "all"


@dataclass
class TrainConfig:
    phase: str = "pretrain"
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    lora: LoraSection | None = None

    def __post_init__(self) -> None:
        if self.phase not in ("pretrain", "sft"):
            raise ConfigError(f"phase must be 'pretrain' or 'sft', got {self.phase!r}")
        if self.model.preset is None and self.model.init_from is None:
            raise ConfigError("model: give a preset (e.g. havoc-7b) or init_from (a checkpoint)")
        if self.model.init_from is None and self.tokenizer is None:
            raise ConfigError("tokenizer: a tokenizer folder is needed for a model trained from scratch")
        if not self.data.sources:
            raise ConfigError("data.sources: at least one source is needed")
        o, t, d = self.optim, self.train, self.data
        # Ranges of every number (types are checked by `_build`): a non-finite or absurd value trains a
        # model into NaN (lr: .inf saved an all-NaN `final` with exit 0).
        _in_range("optim.lr", o.lr, 0, 10, low_open=True)
        _in_range("optim.min_lr", o.min_lr, 0, o.lr if math.isfinite(o.lr) else 10)
        _in_range("optim.eps", o.eps, 0, 1, low_open=True)
        _in_range("optim.weight_decay", o.weight_decay, 0, 10)
        _in_range("optim.grad_clip", o.grad_clip, 0, 1e6)
        if not (isinstance(o.betas, list) and len(o.betas) == 2):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {short(o.betas)}")
        for i, b in enumerate(o.betas):
            _in_range(f"optim.betas[{i}]", b, 0, 1, high_open=True)
        _in_range("optim.warmup_steps", o.warmup_steps, 0, 10**9)
        _in_range("train.steps", t.steps, 1, 10**9)
        _in_range("train.grad_accum", t.grad_accum, 1, 10**6)
        _in_range("train.keep_last", t.keep_last, 1, 10**6)
        for key in ("eval_every", "eval_batches", "log_every", "save_every", "checkpoint_every_n_layers"):
            _in_range(f"train.{key}", getattr(t, key), 0, 10**9)
        _in_range("train.threads", t.threads, 0, 1024)  # set_num_threads(10^5) crashes the process
        _in_range("train.seed", t.seed, 0, 2**63 - 1)
        _in_range("data.seq_len", d.seq_len, 1, 10**7)
        _in_range("data.batch_size", d.batch_size, 1, 10**6)
        _in_range("data.seed", d.seed, 0, 2**63 - 1)
        for s in [*d.sources, *d.eval_sources]:
            _in_range(f"data source {s.name!r} weight", s.weight, 0, 1e6, low_open=True)
        if o.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {o.name!r}")
        if not (o.lr > 0 and 0 <= o.min_lr <= o.lr):
            raise ConfigError(f"optim: need lr > 0 and 0 <= min_lr <= lr, got lr={o.lr}, min_lr={o.min_lr}")
        if o.fused_step and t.grad_accum != 1:
            raise ConfigError(
                "optim.fused_step steps each parameter inside backward, so gradients cannot accumulate: set "
                "train.grad_accum to 1 and raise data.batch_size instead"
            )
        if t.param_dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"train.param_dtype must be float32 or bfloat16, got {t.param_dtype!r}")
        if t.autocast not in ("none", "bfloat16"):
            raise ConfigError(f"train.autocast must be none or bfloat16, got {t.autocast!r}")
        if t.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be auto, cpu or cuda, got {t.device!r}")
        if not 0 <= t.memory_fraction <= 1:
            raise ConfigError(f"train.memory_fraction must be in [0, 1], got {t.memory_fraction}")
        if self.lora is not None:
            self.lora_config()  # its checks, now
            if self.model.init_from is None:
                raise ConfigError("lora: an adapter trains on a pretrained model; set model.init_from")
            if self.phase != "sft":
                raise ConfigError("lora: adapters train in phase sft")
            if self.lora.span == "call" and t.checkpoint_every_n_layers:
                raise ConfigError("lora.span call runs each call through a KV cache: it does not combine with "
                                  "train.checkpoint_every_n_layers")

    def lora_config(self):
        """The adapter's `LoraConfig` (None without a lora section)."""
        if self.lora is None:
            return None
        from havoc.train.lora import LoraConfig

        return LoraConfig(r=self.lora.r, alpha=self.lora.alpha, dropout=self.lora.dropout, targets=list(self.lora.targets),
                          span=self.lora.span)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _build(cls, data, "config")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a YAML run config (or a bare name of a shipped one, e.g. `phase1_pretrain_tiny`)."""
        from havoc.safeparse import load_yaml, read_text

        path = Path(path)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"config file not found: {path} (shipped configs: {shipped})")
        data = load_yaml(read_text(path, "config file"), str(path))
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _in_range(name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> None:
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
          and (value > low if low_open else value >= low) and (value < high if high_open else value <= high))
    if not ok:
        rng = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be a number in {rng}, got {short(value)}")


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value has a field's declared type (int is not bool; float takes int; list[X] per item)."""
    origin, params = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, p) for p in params)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        return isinstance(value, list) and (not params or all(_type_ok(v, params[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    return True  # nested dataclasses are built (and checked) by _build


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(map(str, set(data) - set(fields)))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {short(unknown, 200)}; known keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        if (cls, name) not in _NESTED and not _type_ok(value, hints[name]):
            raise ConfigError(f"{where}.{name} must be {_type_name(hints[name])}, got {type(value).__name__} {short(value, 40)}")
        sub = _NESTED.get((cls, name))
        if sub is not None and value is not None:
            if isinstance(sub, list):
                if not isinstance(value, list):
                    raise ConfigError(f"{where}.{name} must be a list")
                value = [_build(sub[0], v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
            else:
                value = _build(sub, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None


_NESTED = {
    (TrainConfig, "model"): ModelSection,
    (TrainConfig, "data"): DataConfig,
    (TrainConfig, "optim"): OptimConfig,
    (TrainConfig, "train"): TrainSection,
    (TrainConfig, "lora"): LoraSection,
    (DataConfig, "sources"): [SourceConfig],
    (DataConfig, "eval_sources"): [SourceConfig],
}

"""Run configs of the trainer: nested dataclasses read from YAML, every key checked.

    phase: pretrain | sft            # sft also serves phase 3 (polish): same loss, other data and lr
    model: {preset, overrides, init_from}
    tokenizer: FOLDER                # ignored with init_from, which brings its own
    data: {seq_len, batch_size, seed, sources: [{name, paths, weight}], eval_sources: [...]}
    optim: {name, lr, min_lr, warmup_steps, betas, eps, weight_decay, grad_clip, fused_step}
    train: {steps, grad_accum, param_dtype, autocast, stochastic_rounding, checkpoint_every_n_layers,
            eval_every, eval_batches, log_every, save_every, keep_last, out_dir, seed, device}

Relative paths in a config file are taken from the current directory; `pkg:REL` names a file inside the
installed package (the tiny configs read the corpus shipped in havoc/data/corpus that way). A bare name
(`phase1_pretrain_tiny`) names a config shipped in havoc/train/configs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from havoc.errors import ConfigError
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
class TrainConfig:
    phase: str = "pretrain"
    model: ModelSection = field(default_factory=ModelSection)
    tokenizer: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        if self.phase not in ("pretrain", "sft"):
            raise ConfigError(f"phase must be 'pretrain' or 'sft', got {self.phase!r}")
        if self.model.preset is None and self.model.init_from is None:
            raise ConfigError("model: give a preset (e.g. havoc-7b) or init_from (a checkpoint)")
        if self.model.init_from is None and self.tokenizer is None:
            raise ConfigError("tokenizer: a tokenizer folder is needed for a model trained from scratch")
        if not self.data.sources:
            raise ConfigError("data.sources: at least one source is needed")
        o, t = self.optim, self.train
        if o.name not in OPTIMIZERS:
            raise ConfigError(f"optim.name must be one of {OPTIMIZERS}, got {o.name!r}")
        if not (o.lr > 0 and 0 <= o.min_lr <= o.lr):
            raise ConfigError(f"optim: need lr > 0 and 0 <= min_lr <= lr, got lr={o.lr}, min_lr={o.min_lr}")
        if len(o.betas) != 2:
            raise ConfigError(f"optim.betas must be two numbers, got {o.betas}")
        if t.steps < 1 or t.grad_accum < 1 or t.keep_last < 1:
            raise ConfigError("train.steps, train.grad_accum and train.keep_last must be at least 1")
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
        if t.threads < 0:
            raise ConfigError(f"train.threads must be >= 0, got {t.threads}")
        if not 0 <= t.memory_fraction <= 1:
            raise ConfigError(f"train.memory_fraction must be in [0, 1], got {t.memory_fraction}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        return _build(cls, data, "config")

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a YAML run config (or a bare name of a shipped one, e.g. `phase1_pretrain_tiny`)."""
        import yaml

        path = Path(path)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{path}.yaml"
        if not path.is_file():
            shipped = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
            raise ConfigError(f"config file not found: {path} (shipped configs: {shipped})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys are {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
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
    (DataConfig, "sources"): [SourceConfig],
    (DataConfig, "eval_sources"): [SourceConfig],
}

"""havoc's own checkpoint format: a folder with `config.json` and `model.safetensors`.

safetensors holds raw tensors and a JSON header, so loading never unpickles anything. Writes are atomic
(temporary file, fsync, rename): an interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from havoc.config import ModelConfig
from havoc.errors import CheckpointError, ConfigError, ModelNotFoundError
from havoc.io.atomic import atomic_path

if TYPE_CHECKING:
    from havoc.model import HavocModel

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def _list(names, limit: int = 6) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


# Fused parameters and the separate tensors other formats (GGUF, transformers, Meta) store, in row order.
FUSED = {
    "attention.wqkv.weight": ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight"),
    "feed_forward.w13.weight": ("feed_forward.w1.weight", "feed_forward.w3.weight"),
}


def fuse_projections(
    state_dict: dict[str, torch.Tensor], source: str = "checkpoint", *, in_place: bool = False
) -> dict[str, torch.Tensor]:
    """Concatenate separate q/k/v and gate/up tensors into havoc's fused `wqkv` and `w13`.

    Tensors already fused pass through. A group that is only partly present is an error naming the
    missing member. With `in_place`, `state_dict` itself is changed, so each group's parts are freed as
    soon as their fused tensor exists (the caller's dict no longer holds them).
    """
    out = state_dict if in_place else dict(state_dict)
    prefixes = {k[: -len(part)] for k in state_dict for parts in FUSED.values() for part in parts if k.endswith(part)}
    for prefix in sorted(prefixes):
        for fused, parts in FUSED.items():
            names = [prefix + part for part in parts]
            present = [n for n in names if n in out]
            if not present:
                continue
            if len(present) != len(names):
                missing = [n for n in names if n not in out]
                raise CheckpointError(f"{source}: missing tensors: {_list(missing)} (needed beside {_list(present)})")
            if prefix + fused in out:
                raise CheckpointError(f"{source}: has both {prefix + fused} and {_list(names)}")
            out[prefix + fused] = torch.cat([out.pop(n) for n in names], dim=0)
    return out


_LAYER_INDEX = re.compile(r"layers\.(\d+)\.")


def check_layer_count(config: ModelConfig, names, source: str) -> None:
    """Compare the config's layer count with the layers the tensors hold, before anything is built.

    A config's `n_layers` (or a GGUF's `block_count`) is only a claim: building 10^5 layers to find them
    missing took 106 s and 3.3 GB. Counting the distinct `layers.N.` indices of the names is cheap.

    Raises:
        CheckpointError: the counts differ (naming both).
    """
    present = {int(m.group(1)) for n in names if (m := _LAYER_INDEX.match(n))}
    # Fewer layers than claimed is the expensive case; tensors beyond the claim are named by the (then
    # cheap) name-by-name comparison that follows.
    if len(present) < config.n_layers:
        raise CheckpointError(f"{source}: the config says {config.n_layers} layers but the tensors hold "
                              f"{len(present)}")


def check_values(state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Every tensor is floating point and finite, or a CheckpointError naming the first that is not.

    A NaN norm weight or an int8 norm (safetensors carries any dtype) otherwise loads silently and
    generates garbage or nothing. One pass over the weights, in slices so no full-size mask exists:
    ~0.1 s for SmolLM2's 135M parameters.
    """
    for name, t in state_dict.items():
        if not torch.is_floating_point(t):
            raise CheckpointError(f"{source}: tensor {name} has dtype {str(t.dtype).removeprefix('torch.')}; "
                                  "weights must be floating point")
        flat = t.reshape(-1)
        for i in range(0, flat.numel(), 1 << 24):
            if not bool(torch.isfinite(flat[i : i + (1 << 24)]).all()):
                raise CheckpointError(f"{source}: tensor {name} holds NaN or infinite values; the file is "
                                      "corrupt, or was saved from a diverged run")


def build_model(
    config: ModelConfig,
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    source: str = "checkpoint",
    consume: bool = False,
) -> HavocModel:
    """A `HavocModel` holding exactly `state_dict`, checked name by name and shape by shape.

    Separate q/k/v and gate/up tensors (wq, wk, wv, w1, w3) are fused first. The model is built on the
    meta device and the tensors are assigned, so weights are never allocated twice. With `consume`, the
    tensors are taken out of `state_dict` as they are fused and converted (it is left empty), so the
    peak is the model plus one tensor rather than the checkpoint plus the model; on an error nothing has
    been taken. Raises `CheckpointError` naming missing, unexpected or mis-shaped tensors.
    """
    from havoc.model import HavocModel

    check_layer_count(config, state_dict, source)
    with torch.device("meta"):
        model = HavocModel(config)
    # Validate on shape-only (meta) copies first: a bad checkpoint fails before anything is fused or taken.
    shapes = fuse_projections({k: torch.empty(v.shape, device="meta") for k, v in state_dict.items()}, source)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = expected.keys() - shapes.keys()
    unexpected = shapes.keys() - expected.keys()
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors: {_list(missing)}")
        if unexpected:
            parts.append(f"unknown tensors: {_list(unexpected)}")
        raise CheckpointError(f"{source} does not match the model config: " + "; ".join(parts))
    for name, shape in expected.items():
        got = tuple(shapes[name].shape)
        if got != shape:
            raise CheckpointError(f"{source}: tensor {name} has shape {got}, the config expects {shape}")
    check_values(state_dict, source)
    state_dict = fuse_projections(state_dict, source, in_place=consume)
    if consume:  # one tensor at a time: each source tensor is dropped as soon as its converted copy exists
        state = {}
        for k in list(state_dict):
            v = state_dict.pop(k)
            state[k] = v.to(device=device, dtype=dtype or v.dtype)
            del v
    else:
        state = {k: v.to(device=device, dtype=dtype or v.dtype) for k, v in state_dict.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


CONFIG_METADATA = "havoc_config"  # the config's JSON, inside the weights file's metadata


def save_pretrained(model: HavocModel, path: str | Path) -> None:
    """Write `config.json` and `model.safetensors` into the folder `path`."""
    save_weights(model.config, model.state_dict(), path)


def save_weights(config: ModelConfig, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Write `state` and `config` as `model.safetensors` and `config.json` in the folder `path`.

    Each file is replaced atomically, but two renames are not one: the weights file also carries the
    config's JSON in its metadata, and `load_pretrained` refuses a pair whose config.json differs from it
    (a kill between the renames pairs new weights with the old config).
    """
    from safetensors.torch import save_file

    from havoc import __version__

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    meta = {"format": "pt", "producer": f"havoc {__version__}", CONFIG_METADATA: config.to_json()}
    with atomic_path(path / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata=meta)
    config.save(path / CONFIG_NAME)


def _check_pair(config: ModelConfig, weights: Path, config_file: Path) -> None:
    """Refuse weights whose embedded config (written by `save_weights`) is not `config`."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            embedded = (f.metadata() or {}).get(CONFIG_METADATA)
    except Exception:  # noqa: BLE001 - unreadable: load_state_dict names the problem next
        return
    if embedded is None:
        return  # written by an older havoc or another tool
    try:
        same = ModelConfig.from_json(embedded) == config
    except ConfigError:
        same = False
    if not same:
        raise CheckpointError(f"{config_file} and {weights} come from different saves (an interrupted save?): "
                              "the weights carry another config")


def load_state_dict(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning every failure into a `CheckpointError` that names the file."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types (and OSError) for corrupt files
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e})") from None


def load_pretrained(
    path: str | Path, *, dtype: torch.dtype | None = None, device: torch.device | str = "cpu"
) -> HavocModel:
    """Load a folder written by `save_pretrained`."""
    path = Path(path)
    if not path.is_dir():
        raise ModelNotFoundError(f"no checkpoint folder at {path}")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}; is it a havoc checkpoint folder?")
    try:
        config = ModelConfig.load(config_file)
    except ConfigError as e:
        raise CheckpointError(f"{config_file}: {e}") from None
    _check_pair(config, path / WEIGHTS_NAME, config_file)
    state = load_state_dict(path / WEIGHTS_NAME, device=device)
    return build_model(config, state, dtype=dtype, device=device, source=str(path / WEIGHTS_NAME), consume=True)

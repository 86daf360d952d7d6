"""The trainer: one loop for pretraining, SFT and polish, driven by a `TrainConfig`.

    trainer = Trainer(TrainConfig.load("phase1_pretrain_tiny"), resume=False)
    trainer.fit()

Per step: `grad_accum` micro-batches (packed rows with document boundaries, see havoc.data.packing)
through `model.loss` (the fused linear cross-entropy and the ragged attention kernel on CUDA, the
reference ops on CPU) under bf16 autocast when configured; then global-norm clipping and the optimizer
step (or, with `optim.fused_step`, the step already happened inside backward, parameter by parameter);
the LR follows linear warmup then cosine decay to `min_lr`.

Activation checkpointing (non-reentrant `torch.utils.checkpoint`) wraps every n-th block's forward on the
instance, so parameter names, and with them the checkpoints, do not change.

Checkpoints are folders `out_dir/checkpoints/step_NNNNNNN` holding what `havoc generate --model` loads
(model.safetensors, config.json, the tokenizer) and `trainer_state.pt` (optimizer, step, RNG states, data
position, the run config). Each is written under a temporary name and renamed into place, so a crash
never leaves a half checkpoint; the last `keep_last` are kept. `resume=True` continues from the newest
one, and the losses that follow are the ones the uninterrupted run would have produced: the data stream,
the rounding noise and every RNG come back exactly.

Logs: a progress bar (stderr), one line per `log_every` steps on stdout (loss, lr, tokens/s, memory),
`out_dir/log.jsonl`, and TensorBoard event files in `out_dir/tb` when tensorboard is installed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from havoc.data.packing import Packer, encode_pretrain, encode_sft
from havoc.data.sources import Mixture, Source, resolve_path
from havoc.errors import CheckpointError, ConfigError, TrainingDivergedError
from havoc.train import distributed
from havoc.train.config import TrainConfig
from havoc.train.optim import ParamOptimizers, cosine_lr

STATE_FILE = "trainer_state.pt"


def apply_activation_checkpointing(model, every: int) -> int:
    """Recompute every `every`-th block's activations in backward (non-reentrant); returns how many."""
    from torch.utils.checkpoint import checkpoint

    n = 0
    for i, layer in enumerate(model.layers):
        if every > 0 and i % every == 0:
            forward = layer.forward

            def wrapped(*args, _forward=forward):
                return checkpoint(_forward, *args, use_reentrant=False)

            layer.forward = functools.update_wrapper(wrapped, forward)
            n += 1
    return n


class Trainer:
    """Builds model, tokenizer, data and optimizer from `cfg`; `fit()` trains (see module doc).

    Args:
        cfg: the run config.
        resume: continue from the newest checkpoint in `cfg.train.out_dir` (an error if there is none, or
            if it was written by a different config).
        progress: show the progress bar.
        log_stream: where the per-step lines go (stdout by default).
    """

    def __init__(self, cfg: TrainConfig, *, resume: bool = False, progress: bool = True, log_stream=None) -> None:
        self.cfg = cfg
        self.rank, self.world_size = distributed.world()  # (0, 1) unless launched by torchrun
        if self.world_size > 1:
            distributed.check_config(cfg)
            if cfg.lora is not None:
                raise ConfigError("lora: adapters train in one process (no torchrun)")
        from havoc.io.atomic import check_destination

        # Checked before the model is built: an unwritable out_dir would otherwise fail at the first save.
        self.out_dir = check_destination(cfg.train.out_dir, "train.out_dir", folder=True)
        self.progress = progress
        self.log_stream = log_stream if log_stream is not None else sys.stdout
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.train.device == "auto" else cfg.train.device
        )
        if self.device.type == "cuda" and self.world_size > 1:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError("train.device is cuda but no CUDA device is available")
        if self.device.type == "cuda" and cfg.train.memory_fraction > 0:
            torch.cuda.set_per_process_memory_fraction(cfg.train.memory_fraction)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        torch.manual_seed(cfg.train.seed)
        self.param_dtype = getattr(torch, cfg.train.param_dtype)
        self.model, self.tokenizer = self._build_model()
        self.lora = cfg.lora_config()
        if self.lora is not None:
            from havoc.train.lora import apply_lora

            apply_lora(self.model, self.lora)  # the model frozen; only the adapter trains
        # lora.span call: the loss runs backward document by document itself (`call_span_loss`)
        self.call_span = self.lora is not None and self.lora.span == "call"
        if cfg.data.seq_len > self.model.config.max_seq_len:
            raise ConfigError(f"data.seq_len is {cfg.data.seq_len} but the model's context is "
                              f"{self.model.config.max_seq_len}: at most that many positions exist")
        self.n_checkpointed = apply_activation_checkpointing(self.model, cfg.train.checkpoint_every_n_layers)
        if self.world_size > 1:
            distributed.shard(self.model, cfg)
        o = cfg.optim
        self.optimizer = ParamOptimizers(
            [(n, p) for n, p in self.model.named_parameters() if p.requires_grad], o.name,
            lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay,
            stochastic_rounding=cfg.train.stochastic_rounding, seed=cfg.train.seed,
        )
        if o.fused_step:
            self.optimizer.register_fused(clip=o.grad_clip)
        self.packer = self._packer(cfg.data.sources, cfg.data.seed + self.rank)  # each rank its own stream
        self.step = 0
        if resume:
            self._resume()
        elif self.checkpoints():
            raise ConfigError(
                f"{self.out_dir} already holds checkpoints of a run (newest {self.checkpoints()[-1].name}); "
                "continue it with --resume, or set train.out_dir to a new folder"
            )

    # ------------------------------------------------------------------------------------------ building
    def _build_model(self):
        from havoc.config import ModelConfig
        from havoc.model import HavocModel
        from havoc.tokenizer import Tokenizer

        m = self.cfg.model
        if m.init_from is not None:
            from havoc import hub

            model, tokenizer = hub.load(resolve_path(m.init_from), dtype=self.param_dtype, device=self.device)
            model.train()
            return model, tokenizer
        tokenizer = Tokenizer.load(resolve_path(self.cfg.tokenizer))
        overrides = dict(m.overrides)
        overrides.setdefault("vocab_size", tokenizer.vocab_size)
        overrides.update(bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id)
        config = ModelConfig.from_preset(m.preset, **overrides)
        if tokenizer.vocab_size > config.vocab_size:
            raise ConfigError(
                f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size {config.vocab_size}"
            )
        with torch.device("meta"):
            model = HavocModel(config)
        # Allocate once, in the training dtype, on the device (7B in fp32 on the CPU first would be 24 GB).
        model = model.to(dtype=self.param_dtype).to_empty(device=self.device)
        model.reset_parameters()
        return model.train(), tokenizer

    def _path(self, path: str) -> str:
        """A source path; `gen:toolcalls:N[:split]` is made now (or found, on resume) in out_dir/data."""
        if not path.startswith("gen:"):
            return resolve_path(path)
        parts = path.split(":")
        if parts[1] != "toolcalls" or len(parts) not in (3, 4) or not parts[2].isdigit() or int(parts[2]) < 1 \
                or (len(parts) == 4 and parts[3] not in ("train", "dev")):
            raise ConfigError(f"data source {path!r}: the generated source is gen:toolcalls:N or gen:toolcalls:N:dev")
        from havoc.train.toolcalls import write_jsonl

        n, split = int(parts[2]), parts[3] if len(parts) == 4 else "train"
        target = self.out_dir / "data" / f"toolcalls-{split}-{n}-seed{self.cfg.data.seed}.jsonl"
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            made = write_jsonl(target, n, self.tokenizer, seed=self.cfg.data.seed, split=split)
            print(f"tool-call examples: {made['examples']} {split} in {target} ({made['rejected']} rejected: "
                  f"{made['reasons']})", file=self.log_stream, flush=True)
        return str(target)

    def _packer(self, sources, seed: int) -> Packer:
        mixture = Mixture([Source(s.name, [self._path(p) for p in s.paths], s.weight) for s in sources], seed=seed)
        sft = self.cfg.phase == "sft"
        encode = functools.partial(encode_sft if sft else encode_pretrain, self.tokenizer)
        return Packer(mixture, encode, self.cfg.data.seq_len, self.cfg.data.batch_size,
                      split_docs=not sft, pad_id=self.tokenizer.pad_id or 0)

    # ------------------------------------------------------------------------------------------ steps
    def _autocast(self):
        if self.cfg.train.autocast == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _loss(self, batch: dict[str, Any], backward_scale: float | None = None) -> torch.Tensor:
        """The batch's mean loss over its target tokens; with `backward_scale`, its gradient times that is
        accumulated too (the call-scoped adapter runs backward document by document)."""
        dev = self.device
        if self.call_span:
            from havoc.train.lora import call_span_loss

            return call_span_loss(self.model, batch["tokens"], batch["targets"], batch["cu_seqlens"],
                                  backward_scale=backward_scale, autocast=self._autocast, device=dev)
        with self._autocast():
            return self.model.loss(
                batch["tokens"].to(dev), batch["targets"].to(dev), positions=batch["positions"].to(dev),
                cu_seqlens=batch["cu_seqlens"].to(dev), max_seqlen=batch["max_seqlen"],
            )

    def train_step(self) -> dict[str, float | None]:
        """One optimizer step (all its micro-batches); returns loss, lr, grad_norm."""
        t, o = self.cfg.train, self.cfg.optim
        lr = cosine_lr(self.step, lr=o.lr, min_lr=o.min_lr, warmup_steps=o.warmup_steps, total_steps=t.steps)
        self.optimizer.set_lr(lr)
        total = 0.0
        for _ in range(t.grad_accum):
            loss = self._loss(self.packer.next_batch(), 1.0 / t.grad_accum if self.call_span else None)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(f"step {self.step + 1}: the loss is {loss.item()}; {self._diverged_hint()}")
            if not self.call_span:  # the call span's backward ran per document inside _loss
                (loss / t.grad_accum).backward()
            total += loss.item() / t.grad_accum
        total = distributed.mean_across_ranks(total)
        grad_norm = None  # not computed when the step is fused into backward, or without clipping
        if o.fused_step:
            self.optimizer.step_count += 1  # every parameter already stepped inside backward
        else:
            params = list(self.optimizer.params.values())
            if o.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip)
                grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # a DTensor under FSDP
            self.optimizer.step()
        self.step += 1
        self.check_finite(f"after step {self.step}")
        return {"loss": total, "lr": lr, "grad_norm": grad_norm}

    @torch.no_grad()
    def check_finite(self, when: str) -> None:
        """Raise TrainingDivergedError if any weight is NaN or infinite (one norm per tensor, one sync).

        A finite loss does not mean finite weights: with lr = inf the first step's loss is fine and its
        update is not. Checked after every step and before every save, so a diverged model is never
        written and `keep_last` never prunes a good checkpoint in favour of a broken one.
        """
        norms = [torch.linalg.vector_norm(p.to_local() if hasattr(p, "to_local") else p, dtype=torch.float32)
                 for p in self.model.parameters() if p.numel()]
        bad = 0.0 if bool(torch.isfinite(torch.stack(norms)).all()) else 1.0
        if distributed.mean_across_ranks(bad) > 0:
            raise TrainingDivergedError(f"{when}: the weights hold NaN or infinite values; {self._diverged_hint()}")

    def _diverged_hint(self) -> str:
        found = self.checkpoints()
        last = f"the last good checkpoint is {found[-1]}" if found else "no checkpoint was written"
        return f"training diverged (lower optim.lr, raise warmup_steps or set grad_clip); {last}"

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss over `eval_batches` batches of the eval sources (the same batches every time)."""
        if not self.cfg.data.eval_sources:
            return None
        packer = self._packer(self.cfg.data.eval_sources, self.cfg.data.seed + 1)
        self.model.eval()
        try:
            losses = [self._loss(packer.next_batch()).item() for _ in range(self.cfg.train.eval_batches)]
        finally:
            self.model.train()
        return sum(losses) / len(losses)

    def fit(self, stop_after: int | None = None) -> list[float]:
        """Train to `train.steps` (or until `stop_after` steps in total); returns the step losses of this call."""
        t = self.cfg.train
        end = t.steps if stop_after is None else min(t.steps, stop_after)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        main = self.rank == 0
        tb = _tensorboard(self.out_dir / "tb") if main else None
        bar = None
        if self.progress and main:
            from tqdm import tqdm

            bar = tqdm(total=t.steps, initial=self.step, file=sys.stderr, dynamic_ncols=True, desc="train")
        tokens_per_step = t.grad_accum * self.cfg.data.batch_size * self.cfg.data.seq_len
        losses: list[float] = []
        with open(self.out_dir / "log.jsonl" if main else os.devnull, "a", encoding="utf-8") as log:
            while self.step < end:
                t0 = time.perf_counter()
                rec = self.train_step()
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                losses.append(rec["loss"])
                rec.update(step=self.step, tokens_per_s=tokens_per_step / dt, mem_gib=_memory_gib(self.device),
                           time=time.time())
                if t.eval_every and self.step % t.eval_every == 0:
                    rec["eval_loss"] = self.evaluate()
                log.write(json.dumps(rec) + "\n")
                log.flush()
                if tb is not None:
                    for k in ("loss", "lr", "tokens_per_s", "mem_gib", "eval_loss"):
                        if rec.get(k) is not None:
                            tb.add_scalar(k, rec[k], self.step)
                line = (f"step {self.step}/{t.steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                        f"{rec['tokens_per_s']:,.0f} tok/s | mem {rec['mem_gib']:.2f} GiB")
                if rec.get("eval_loss") is not None:
                    line += f" | eval {rec['eval_loss']:.4f}"
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.1e}",
                                    tok_s=f"{rec['tokens_per_s']:.0f}", mem=f"{rec['mem_gib']:.1f}G")
                if main and t.log_every and (self.step % t.log_every == 0 or self.step == end):
                    print(line, file=self.log_stream, flush=True)
                if (t.save_every and self.step % t.save_every == 0) or self.step == end:
                    self.save_checkpoint()
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
        if self.step == t.steps:
            self.save_final()
        return losses

    # ------------------------------------------------------------------------------------------ checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def checkpoints(self) -> list[Path]:
        """This run's checkpoint folders, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        return sorted(p for p in self.checkpoint_dir.iterdir() if p.is_dir() and p.name.startswith("step_"))

    def _write_model_folder(self, final: Path, extra=None) -> None:
        from havoc.io.checkpoint import save_pretrained

        self.check_finite(f"saving {final.name}")
        tmp = final.parent / f".{final.name}.tmp"
        weights = distributed.full_state_dict(self.model) if self.world_size > 1 else None
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            if self.lora is not None:  # the adapter alone, in PEFT's format; the base model is init_from
                from havoc.train.lora import save_adapter

                save_adapter(self.model, tmp, base_model=self.cfg.model.init_from or "")
            elif weights is None:
                save_pretrained(self.model, tmp)
            else:
                _save_weights(self.model.config, weights, tmp)
            self.tokenizer.save(tmp)
        distributed.barrier()
        if extra is not None:
            extra(tmp)  # every rank writes its own state file
        distributed.barrier()
        if self.rank == 0:
            old = final.parent / f".{final.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)  # the folder appears complete or not at all
            shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()

    def _state_file(self) -> str:
        return STATE_FILE if self.world_size == 1 else f"trainer_state.rank{self.rank}.pt"

    def save_checkpoint(self) -> Path:
        """Write `checkpoints/step_NNNNNNN` atomically and prune to the last `keep_last`."""
        state = {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data": self.packer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
        }
        path = self.checkpoint_dir / f"step_{self.step:07d}"
        self._write_model_folder(path, lambda tmp: torch.save(state, tmp / self._state_file()))
        if self.rank == 0:
            for old in self.checkpoints()[: -self.cfg.train.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        distributed.barrier()
        return path

    def save_final(self) -> Path:
        """`out_dir/final`: the trained model and tokenizer, loadable by `havoc generate --model`."""
        path = self.out_dir / "final"
        self._write_model_folder(path)
        return path

    def _resume(self) -> None:
        from havoc.io.checkpoint import WEIGHTS_NAME, load_state_dict

        found = self.checkpoints()
        if not found:
            raise CheckpointError(f"--resume: no checkpoint in {self.checkpoint_dir}")
        path = found[-1]
        state_file = path / self._state_file()
        if not state_file.is_file():
            raise CheckpointError(
                f"{path} has no {state_file.name}: it was written by a run on a different number of ranks "
                f"(this one has {self.world_size})"
            )
        try:
            state = torch.load(state_file, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{state_file} is not a readable trainer state ({e})") from None
        diff = [d for d in _diff(state["config"], self.cfg.to_dict()) if not d.startswith("train.out_dir:")]  # runs move
        if diff:
            raise ConfigError(
                f"--resume: {path} was written by a different config ({'; '.join(diff[:5])}); resume with the "
                "config that started the run"
            )
        if self.lora is not None:
            self._load_adapter_weights(path)
        elif self.world_size > 1:
            distributed.load_full_state_dict(self.model, load_state_dict(path / WEIGHTS_NAME))
        else:
            self.model.load_state_dict(load_state_dict(path / WEIGHTS_NAME, device=self.device), strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.packer.load_state_dict(state["data"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["step"]
        if self.rank == 0:
            _truncate_log(self.out_dir / "log.jsonl", self.step)

    @torch.no_grad()
    def _load_adapter_weights(self, path: Path) -> None:
        from havoc.train.lora import adapter_state_dict, read_adapter

        _, tensors = read_adapter(path)
        want = adapter_state_dict(self.model)
        if set(tensors) != set(want):
            raise CheckpointError(f"{path}: its adapter does not match this run's lora section")
        for key, t in want.items():
            t.copy_(tensors[key].to(t.dtype))


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log records past `step` (written after the checkpoint a run resumes from, and about to be
    written again), so log.jsonl holds each step once."""
    if not path.is_file():
        return
    from havoc.io.atomic import atomic_write_text

    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec_step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue  # a line cut by the kill
        if isinstance(rec_step, int) and rec_step <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def _save_weights(config, weights: dict[str, torch.Tensor], folder: Path) -> None:
    """save_pretrained's format from an already gathered state dict (FSDP's rank 0)."""
    from havoc.io.checkpoint import save_weights

    save_weights(config, weights, folder)


def _diff(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{where}.{k}" if where else k)
        return out
    return [] if a == b else [f"{where}: {a!r} then, {b!r} now"]


def _memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(path))

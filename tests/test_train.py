"""The trainer: small updates survive bf16, exact resume, checkpoints, schedule, configs, CLI, phases 0 -> 1 -> 2."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from havoc.cli import main
from havoc.config import ModelConfig
from havoc.errors import CheckpointError, ConfigError
from havoc.model import HavocModel
from havoc.train.config import CONFIG_DIR, TrainConfig
from havoc.train.optim import ParamOptimizers, cosine_lr, stochastic_round_bf16
from havoc.train.trainer import Trainer, apply_activation_checkpointing

from .train_helpers import one_thread, tiny_config  # noqa: F401  (one_thread: autouse fixture)

pytest.importorskip("bitsandbytes")


# ---------------------------------------------------------------------------------------------- optimizer
def test_cosine_schedule_warms_up_then_decays_to_min_lr():
    kw = dict(lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=14)
    lrs = [cosine_lr(s, **kw) for s in range(16)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert math.isclose(lrs[9], 0.55) and math.isclose(lrs[14], 0.1) and lrs[15] == lrs[14]
    assert all(a >= b for a, b in zip(lrs[3:], lrs[4:]))


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    x = torch.full((200_000,), 1.0 + 2**-10)  # an eighth of the way from 1.0 to the next bf16 value, 1 + 2^-7
    g = torch.Generator().manual_seed(0)
    r = stochastic_round_bf16(x, g)
    assert r.dtype == torch.bfloat16
    assert set(r.float().unique().tolist()) == {1.0, 1.0078125}
    assert abs(r.float().mean().item() - x[0].item()) < 2e-5  # round-to-nearest would give exactly 1.0
    assert torch.equal(stochastic_round_bf16(torch.tensor([0.5, -3.0]), g).float(), torch.tensor([0.5, -3.0]))


@pytest.mark.parametrize("name", ["adamw", "adamw8bit"])
def test_a_small_lr_still_moves_bf16_weights(name):
    """8-bit AdamW at lr 3e-5 writing back to bf16 with round-to-nearest loses the updates; stochastic
    rounding and fp32 master weights keep them (the issue's requirement)."""
    torch.manual_seed(0)
    w0 = torch.randn(64, 128) * 0.02 + 0.05  # weights of typical size: bf16 spacing 2.4e-4 there
    grad = torch.randn(64, 128).sign()  # a consistent direction: Adam steps of ~lr per element
    result = {}
    for mode in ("fp32", "bf16-nearest", "bf16-stochastic"):
        dtype = torch.float32 if mode == "fp32" else torch.bfloat16
        p = torch.nn.Parameter(w0.to(dtype).clone())
        opt = ParamOptimizers([("w", p)], name, lr=3e-5, weight_decay=0.0,
                              stochastic_rounding=mode == "bf16-stochastic")
        start = p.detach().float().clone()
        for _ in range(20):
            p.grad = grad.to(dtype)
            opt.step()
        moved = (p.detach().float() - start)
        result[mode] = (moved.ne(0).float().mean().item(), (moved * -grad).mean().item())
    # fp32: every weight moved ~20 x 3e-5 against the gradient
    assert result["fp32"][0] == 1.0 and 4e-4 < result["fp32"][1] < 7e-4
    # bf16 with round-to-nearest: the update is below half a spacing, nothing moves
    assert result["bf16-nearest"][0] < 0.05
    # stochastic rounding: most weights moved, and on average by what fp32 moved
    assert result["bf16-stochastic"][0] > 0.5
    assert abs(result["bf16-stochastic"][1] - result["fp32"][1]) < 0.25 * result["fp32"][1]


def test_no_weight_decay_on_norms():
    model = HavocModel(ModelConfig.from_preset("tiny"))
    opt = ParamOptimizers(model.named_parameters(), "paged_adamw8bit", weight_decay=0.1)
    decays = {n: o.param_groups[0]["weight_decay"] for n, o in opt.optimizers.items()}
    assert decays["norm.weight"] == 0 and decays["layers.0.attention_norm.weight"] == 0
    assert decays["layers.1.ffn_norm.weight"] == 0
    assert decays["layers.0.attention.wqkv.weight"] == 0.1 and decays["tok_embeddings.weight"] == 0.1


def test_fused_step_in_backward_matches_stepping_after():
    torch.manual_seed(0)
    base = HavocModel(ModelConfig.from_preset("tiny", vocab_size=64))
    tokens = torch.randint(0, 64, (2, 24))
    models = []
    for fused in (False, True):
        model = HavocModel(base.config)
        model.load_state_dict(base.state_dict())
        opt = ParamOptimizers(model.named_parameters(), "adamw", lr=1e-2, weight_decay=0.1)
        if fused:
            opt.register_fused()
        for _ in range(2):
            model.loss(tokens[:, :-1], tokens[:, 1:]).backward()
            if not fused:
                opt.step()
        assert all(p.grad is None for p in model.parameters())  # gradients freed right after their step
        models.append(model)
    for (n, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=n)


def test_activation_checkpointing_keeps_gradients_and_names():
    torch.manual_seed(0)
    a = HavocModel(ModelConfig.from_preset("tiny", vocab_size=64))
    b = HavocModel(a.config)
    b.load_state_dict(a.state_dict())
    assert apply_activation_checkpointing(b, every=1) == a.config.n_layers
    assert list(a.state_dict()) == list(b.state_dict())
    tokens = torch.randint(0, 64, (2, 20))
    cu = torch.tensor([0, 7, 20, 33, 40], dtype=torch.int32)
    for m in (a, b):
        m.loss(tokens, tokens.roll(-1, 1), cu_seqlens=cu, max_seqlen=13).backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-5, atol=1e-7, msg=n)


# ---------------------------------------------------------------------------------------------- trainer
def test_resume_gives_the_losses_of_one_uninterrupted_run(tmp_path):
    """2N steps in one run == N steps, a fresh process-like Trainer resuming, N more (8-bit states, bf16
    weights with stochastic rounding, gradient accumulation, checkpointed layers, mid-document data)."""
    sections = dict(optim={"name": "paged_adamw8bit"},
                    train={"steps": 6, "grad_accum": 2, "param_dtype": "bfloat16", "stochastic_rounding": True,
                           "checkpoint_every_n_layers": 1, "save_every": 3})
    whole = Trainer(tiny_config(tmp_path / "a", **sections), progress=False).fit()
    first = Trainer(tiny_config(tmp_path / "b", **sections), progress=False)
    part1 = first.fit(stop_after=3)
    del first
    resumed = Trainer(tiny_config(tmp_path / "b", **sections), resume=True, progress=False)
    assert resumed.step == 3
    part2 = resumed.fit()
    assert len(whole) == 6 and part1 + part2 == whole  # bit for bit
    a = torch.load(tmp_path / "a/checkpoints/step_0000006/trainer_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/step_0000006/trainer_state.pt", weights_only=True)
    assert a["data"] == b["data"]
    from havoc.io.checkpoint import load_state_dict

    wa = load_state_dict(tmp_path / "a/checkpoints/step_0000006/model.safetensors")
    wb = load_state_dict(tmp_path / "b/checkpoints/step_0000006/model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoints_are_atomic_pruned_and_loadable(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", train={"steps": 4, "save_every": 1, "keep_last": 2, "log_every": 2})
    trainer = Trainer(cfg, progress=False)
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir())
    assert names == ["step_0000003", "step_0000004"]  # the last two; no temporary folder left behind
    log = [json.loads(line) for line in (tmp_path / "run/log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"loss", "lr", "tokens_per_s", "mem_gib", "grad_norm"} <= set(log[0])
    out = capsys.readouterr().out
    assert "step 2/4 | loss" in out and "tok/s | mem" in out
    from havoc.llm import LLM

    llm = LLM.load(str(tmp_path / "run/final"))  # what `havoc generate --model` does
    assert llm.tokenizer.token_to_id("<reason>") == 10
    assert llm.generate("The", max_new_tokens=3).stats.generated_tokens <= 3


def test_resume_refuses_a_different_config_or_no_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        Trainer(tiny_config(tmp_path / "r"), resume=True, progress=False)
    Trainer(tiny_config(tmp_path / "r", train={"steps": 2}), progress=False).fit()
    with pytest.raises(ConfigError, match="already holds checkpoints of a run"):
        Trainer(tiny_config(tmp_path / "r", train={"steps": 2}), progress=False)  # a fresh start over a run
    with pytest.raises(ConfigError, match=r"different config \(optim.lr: 0.003 then, 0.001 now"):
        Trainer(tiny_config(tmp_path / "r", train={"steps": 2}, optim={"lr": 1e-3}), resume=True, progress=False)


def test_eval_runs_on_the_same_batches_every_time(tmp_path):
    from .train_helpers import CORPUS_DIR

    cfg = tiny_config(tmp_path / "e", train={"steps": 2},
                      data={"eval_sources": [{"name": "ev", "paths": [str(CORPUS_DIR / "stories.txt")]}]})
    trainer = Trainer(cfg, progress=False)
    assert trainer.evaluate() == trainer.evaluate()


# ---------------------------------------------------------------------------------------------- configs
def test_shipped_configs_load_and_each_7b_phase_has_a_tiny_twin():
    names = sorted(p.stem for p in CONFIG_DIR.glob("phase[123]_*.yaml"))
    assert names == ["phase1_pretrain_7b", "phase1_pretrain_tiny", "phase2_sft_7b", "phase2_sft_smollm2",
                     "phase2_sft_tiny", "phase2_toolcalls_lora_smollm2", "phase3_polish_7b", "phase3_polish_tiny"]
    for name in names:
        cfg = TrainConfig.load(name)
        if name.endswith("_7b"):
            assert cfg.optim.name == "paged_adamw8bit" and cfg.optim.fused_step
            assert cfg.train.param_dtype == "bfloat16" and cfg.train.stochastic_rounding
            assert cfg.train.checkpoint_every_n_layers == 1 and cfg.data.seq_len == 2048


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"optim": {"learning_rate": 1}}, r"config.optim: unknown keys \['learning_rate'\]"),
        ({"trian": {}}, r"unknown keys \['trian'\]"),
        ({"optim": {"name": "sgd"}}, "optim.name must be one of"),
        ({"optim": {"fused_step": True}, "train": {"grad_accum": 4}}, "cannot accumulate"),
        ({"train": {"param_dtype": "float16"}}, "param_dtype must be"),
        ({"data": {"sources": []}}, "at least one source"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path, patch, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, **patch)


def test_cli_train_and_memory(tmp_path, capsys):
    import yaml

    missing = tmp_path / "missing.yaml"
    cfg = tiny_config(tmp_path / "c").to_dict()
    cfg["data"]["sources"][0]["paths"] = [str(tmp_path / "nope.txt")]
    missing.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(missing)]) == 2
    assert "nope.txt' matches no file" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "no.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err

    assert main(["memory", "--config", "havoc-7b", "--gpu-gb", "24"]) == 0
    out = capsys.readouterr().out
    for row in ("weights", "master weights", "gradients", "optimizer states", "activations", "logits and loss",
                "workspace", "paged optimizer states"):
        assert row in out
    assert "5,957,685,248 parameters" in out and "fits:" in out and "headroom" in out
    assert main(["memory", "--config", "havoc-7b", "--gpu-gb", "8"]) == 1
    assert "does NOT fit" in capsys.readouterr().out


def test_phases_0_1_2_on_the_shipped_corpus(tmp_path, monkeypatch, capsys):
    """The tiny configs end to end, as the README runs them: the loss falls, the result generates."""
    import yaml

    monkeypatch.chdir(tmp_path)
    assert main(["tokenizer", "train", "--config", "phase0_tokenizer_tiny"]) == 0
    for name, steps in (("phase1_pretrain_tiny", 40), ("phase2_sft_tiny", 10)):
        data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        data["train"].update(steps=steps, eval_every=0, save_every=0)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data))
        assert main(["train", "--config", str(path), "--no-progress"]) == 0
    log = [json.loads(line) for line in (tmp_path / "runs/tiny/phase1/log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log]
    assert losses[0] > 6.0 and sum(losses[-5:]) / 5 < losses[0] - 1.5  # ln(1024) = 6.9 at the start
    capsys.readouterr()
    assert main(["generate", "A control chart", "--model", "runs/tiny/phase2/final", "-n", "5", "--no-stream"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.model
@pytest.mark.slow
def test_phase2_fine_tunes_imported_smollm2(tmp_path):
    """The shipped SmolLM2 SFT config, shortened: its own tokenizer and ChatML template, loss on completions."""
    import yaml

    data = yaml.safe_load((CONFIG_DIR / "phase2_sft_smollm2.yaml").read_text())
    data["data"].update(seq_len=64, batch_size=1)
    data["train"].update(steps=2, save_every=0, log_every=0, threads=1, out_dir=str(tmp_path / "run"))
    trainer = Trainer(TrainConfig.from_dict(data), progress=False)
    assert trainer.tokenizer.token_to_id("<|im_start|>") is not None
    batch = trainer.packer.next_batch()
    learned = [t for t in batch["targets"][0].tolist() if t != -100]
    assert learned and "<|im_end|>" in trainer.tokenizer.decode(learned)  # the assistant's turn and its end
    losses = trainer.fit()
    assert len(losses) == 2 and all(0 < x < 10 for x in losses)
    from havoc.llm import LLM

    llm = LLM.load(str(tmp_path / "run/final"))
    assert llm.model.config.vocab_size == 49152 and llm.tokenizer.chat_template


def test_fsdp2_on_two_cpu_ranks_trains_and_resumes(tmp_path):
    """torchrun, 2 processes, gloo: FSDP2-sharded training; resuming its step-2 checkpoint elsewhere gives
    the uninterrupted run's losses for steps 3-4; the gathered model loads for generation."""
    import shutil
    import subprocess
    import sys

    import yaml

    def launch(out, *extra):
        cfg = tiny_config(out, train={"steps": 4, "save_every": 2, "log_every": 1}).to_dict()
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "havoc.cli",
               "train", "--config", str(path), "--no-progress", *extra]
        # cwd outside the source tree: `python -m` puts the cwd first on sys.path, and the repository's havoc/
        # (which has no havoc.kernels until installed) would shadow the installed package
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert proc.returncode == 0, proc.stderr[-3000:]
        return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]

    whole = launch(tmp_path / "a")
    ckpt = tmp_path / "a/checkpoints/step_0000002"
    assert {p.name for p in ckpt.iterdir()} >= {"model.safetensors", "trainer_state.rank0.pt", "trainer_state.rank1.pt"}
    (tmp_path / "b/checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, tmp_path / "b/checkpoints/step_0000002")
    resumed = launch(tmp_path / "b", "--resume")
    assert [r["step"] for r in resumed] == [3, 4]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in whole[2:]]
    assert whole[-1]["loss"] < whole[0]["loss"]
    from havoc.llm import LLM

    llm = LLM.load(str(tmp_path / "a/final"))
    assert llm.model.num_parameters() == llm.model.config.num_parameters()


def test_fsdp_refuses_8bit_states(tmp_path):
    from havoc.train import distributed

    with pytest.raises(ConfigError, match="8-bit states do not work with FSDP"):
        distributed.check_config(tiny_config(tmp_path, optim={"name": "paged_adamw8bit"}))
    with pytest.raises(ConfigError, match="fused_step is not available under FSDP"):
        distributed.check_config(tiny_config(tmp_path, optim={"fused_step": True}))


@pytest.mark.slow
def test_triton_kernels_track_the_reference_through_training_steps(monkeypatch):
    """The CUDA path's kernels (ragged flash attention fwd/bwd, fused linear cross-entropy, norms, RoPE,
    SwiGLU), run by Triton's interpreter on CPU, against the reference ops: packed documents, checkpointed
    layers, the 8-bit step fused into backward. Three steps, same losses and weights."""
    from havoc import ops

    if not torch.cuda.is_available():
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    torch.manual_seed(0)
    base = HavocModel(ModelConfig.from_preset("tiny", vocab_size=128, dim=48, n_heads=3, n_kv_heads=1, ffn_hidden=80))
    tokens = torch.randint(0, 128, (2, 24))
    targets = tokens.roll(-1, 1)
    targets[:, -1] = -100
    cu = torch.tensor([0, 9, 24, 31, 48], dtype=torch.int32)
    positions = torch.cat([torch.arange(n) for n in (9, 15, 7, 17)]).view(2, 24)
    runs = {}
    for backend in ("reference", "triton"):
        model = HavocModel(base.config)
        model.load_state_dict(base.state_dict())
        apply_activation_checkpointing(model, 1)
        ParamOptimizers(model.named_parameters(), "adamw8bit", lr=1e-2).register_fused()
        losses = []
        with ops.use_backend(backend):
            for _ in range(3):
                loss = model.loss(tokens, targets, positions=positions, cu_seqlens=cu, max_seqlen=17)
                loss.backward()
                losses.append(loss.item())
        runs[backend] = losses, model
    assert runs["triton"][0] == pytest.approx(runs["reference"][0], rel=1e-5)
    assert runs["reference"][0][-1] < runs["reference"][0][0]
    for (n, a), b in zip(runs["reference"][1].named_parameters(), runs["triton"][1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-4, msg=n)


@pytest.mark.parametrize("name", ["adamw", "paged_adamw8bit"])
def test_optimizer_state_round_trips_exactly_with_bf16_weights(name):
    """Loading casts float states to the parameter's dtype; bf16 weights that step in fp32 (stochastic
    rounding) must get their fp32 states back unrounded."""
    torch.manual_seed(0)
    params = [("w", torch.nn.Parameter(torch.randn(96, 64).bfloat16())),  # 8-bit states (>= 4096 values)
              ("norm.weight", torch.nn.Parameter(torch.ones(64).bfloat16()))]  # 32-bit states
    opt = ParamOptimizers(params, name, lr=1e-3, stochastic_rounding=True)
    for _ in range(2):
        for _, p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    saved = opt.state_dict()
    fresh = ParamOptimizers(params, name, lr=1e-3, stochastic_rounding=True)
    fresh.load_state_dict(saved)
    for n, o in opt.optimizers.items():
        a = next(iter(o.state.values()))
        b = next(iter(fresh.optimizers[n].state.values()))
        assert set(a) == set(b)
        for key, value in a.items():
            if torch.is_tensor(value):
                assert value.dtype == b[key].dtype and torch.equal(value, b[key]), (n, key)
    assert all(p.dtype == torch.bfloat16 for _, p in params)

"""The ``speed:`` switches leave the loss as it was, and ``superlora bench`` runs end to end (tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from superlora.config import load_config
from superlora.training.config import TrainConfig
from test_training import write_e2e
from tiny import tiny_model

OFF = {
    "speed.bf16": "false",
    "speed.target_only_logits": "false",
    "speed.group_by_length": "false",
    "speed.attention": "model",
    "speed.fast_dropout": "false",
}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    return write_e2e(tmp_path / "e2e", rows=48)


def make_cfg(model_dir: Path, data_dir: Path, out: Path, **extra: str) -> TrainConfig:
    items = {
        "model": str(model_dir),
        "task.source": str(data_dir),
        "data.max_length": 48,
        "optim.batch_size": 4,
        "optim.max_steps": 6,
        "optim.lr": 0.01,
        "lora.dropout": 0.0,  # deterministic forward passes, so two loss paths can be compared exactly
        "log_every": 1,
        "output_dir": str(out),
    } | OFF
    return load_config(TrainConfig, None, [f"{k}={v}" for k, v in (items | extra).items()])


def prepared(cfg: TrainConfig):
    """(trainer, model, one padded batch) for ``cfg``, built the way ``train`` builds them."""
    from superlora.data.collate import PadCollator
    from superlora.training.hf import AtomicCheckpointTrainer, training_arguments
    from superlora.training.plan import plan_run
    from superlora.training.speed import speed_setup
    from superlora.training.trainer import attach_lora

    plan = plan_run(cfg)
    model = attach_lora(plan)
    fast = speed_setup(model, plan.loaded, cfg.speed)
    collator = PadCollator(plan.loaded.tokenizer.pad_token_id)
    args = training_arguments(cfg, plan.run)
    trainer = AtomicCheckpointTrainer(model=model, args=args, train_dataset=plan.dataset, data_collator=collator)
    trainer.target_only_logits = fast.target_only
    rows = [plan.dataset[i] for i in (0, 1, 5, 7)]
    rows[1] = {key: value[:-4] for key, value in rows[1].items()}  # a shorter row: the batch has padding
    return trainer, model, collator(rows)


def loss_and_grads(trainer, model, batch, num_items=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    model.train()
    torch.manual_seed(0)  # the same dropout masks (GPT-2's own dropout is on) in both passes
    loss = trainer.compute_loss(trainer.model_wrapped, dict(batch), num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("smoothing", [0.1, 0.0])  # 0.1: the Trainer's LabelSmoother; 0: the model's own loss
def test_target_only_logits_same_loss_and_gradients(family, smoothing, tiny_model_dir, data_dir, tmp_path):
    """Target-only logits give the Trainer's loss and the same gradients, per batch and with num_items_in_batch."""
    cfg = make_cfg(tiny_model_dir(family), data_dir, tmp_path / "run", **{"optim.label_smoothing": smoothing})
    trainer, model, batch = prepared(cfg)
    assert int((batch["labels"] == -100).sum()) > int((batch["attention_mask"] == 0).sum()) > 0  # prompt and padding
    for num_items in (None, torch.tensor(123)):  # 123: as if the step accumulated more micro-batches
        trainer.target_only_logits = False
        full, full_grads = loss_and_grads(trainer, model, batch, num_items)
        trainer.target_only_logits = True
        target, target_grads = loss_and_grads(trainer, model, batch, num_items)
        torch.testing.assert_close(target, full, rtol=1e-6, atol=1e-6)
        assert full_grads.keys() == target_grads.keys() and full_grads
        for name in full_grads:
            torch.testing.assert_close(target_grads[name], full_grads[name], rtol=1e-4, atol=1e-7)
        assert any(g.abs().sum() > 0 for g in target_grads.values())


def test_target_only_logits_under_bf16(tiny_model_dir, data_dir, tmp_path):
    """In bf16 both paths use the same bf16 head on the same hidden states and an fp32 loss: the same loss."""
    cfg = make_cfg(tiny_model_dir("llama"), data_dir, tmp_path / "run", **{"speed.bf16": "true"})
    trainer, model, batch = prepared(cfg)
    trainer.model_wrapped = trainer.accelerator.prepare_model(model)  # forward in autocast, logits to fp32
    trainer.target_only_logits = False
    full, full_grads = loss_and_grads(trainer, model, batch)
    trainer.target_only_logits = True
    target, target_grads = loss_and_grads(trainer, model, batch)
    torch.testing.assert_close(target, full, rtol=1e-4, atol=1e-4)
    for name in full_grads:
        torch.testing.assert_close(target_grads[name], full_grads[name], rtol=2e-2, atol=1e-4)


def test_bf16_keeps_the_loss_within_tolerance(tiny_model_dir, data_dir, tmp_path):
    """bf16: the per-step losses of a short run stay within 1% of fp32; frozen block weights are bf16, LoRA fp32."""
    from superlora.training.rundir import read_log
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    losses = {}
    for bf16 in ("false", "true"):
        cfg = make_cfg(model_dir, data_dir, tmp_path / f"bf16-{bf16}", **{"speed.bf16": bf16})
        train(cfg)
        losses[bf16] = [r["loss"] for r in read_log(Path(cfg.output_dir) / "log.jsonl")]
    assert len(losses["true"]) == 6
    torch.testing.assert_close(losses["true"], losses["false"], rtol=1e-2, atol=0)
    assert losses["true"] != losses["false"]  # it did run in bf16

    _, model, _ = prepared(make_cfg(model_dir, data_dir, tmp_path / "dtypes", **{"speed.bf16": "true"}))
    dtypes = {name.split(".layers.0.")[-1]: p.dtype for name, p in model.named_parameters() if ".layers.0." in name}
    assert dtypes["self_attn.q_proj.base_layer.weight"] == dtypes["mlp.down_proj.weight"] == torch.bfloat16
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert model.get_base_model().get_input_embeddings().weight.dtype == torch.float32  # tied head: fp32


def test_group_by_length_same_examples_per_epoch_less_padding(tmp_path):
    """One epoch of grouped batches holds every example exactly once, with less padding than random batches."""
    import random

    from superlora.data.collate import PadCollator, TokenizedRows
    from superlora.training.hf import AtomicCheckpointTrainer, training_arguments

    rng = random.Random(0)
    rows = [{"input_ids": [3 + i % 90] + [5] * rng.randint(2, 40)} for i in range(96)]
    rows = [r | {"attention_mask": [1] * len(r["input_ids"]), "labels": r["input_ids"]} for r in rows]
    padding = {}
    for grouped in ("false", "true"):
        cfg = make_cfg(tmp_path, tmp_path, tmp_path / "run", **{"speed.group_by_length": grouped})
        trainer = AtomicCheckpointTrainer(
            model=tiny_model("llama"),
            args=training_arguments(cfg, tmp_path / "run"),
            train_dataset=TokenizedRows(rows),
            data_collator=PadCollator(1),
        )
        seen, real, padded = [], 0, 0
        for batch in trainer.get_train_dataloader():
            mask = batch["attention_mask"].bool()
            seen += [tuple(ids[keep].tolist()) for ids, keep in zip(batch["input_ids"], mask, strict=True)]
            real, padded = real + int(mask.sum()), padded + mask.numel()
        assert sorted(seen) == sorted(tuple(r["input_ids"]) for r in rows)
        padding[grouped] = 1 - real / padded
    assert padding["true"] < padding["false"] / 2, padding


@pytest.mark.parametrize(("switch", "values"), [("speed.threads", (1, 2)), ("speed.attention", ("sdpa", "eager"))])
def test_threads_and_attention_leave_the_loss(switch, values, tiny_model_dir, data_dir, tmp_path):
    model_dir, threads = tiny_model_dir("llama"), torch.get_num_threads()
    losses = []
    try:
        for i, value in enumerate(values):
            trainer, model, batch = prepared(make_cfg(model_dir, data_dir, tmp_path / f"run{i}", **{switch: value}))
            losses.append(loss_and_grads(trainer, model, batch)[0])
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_no_backward_below_the_lowest_adapted_block(tiny_model_dir, data_dir, tmp_path):
    """With adapters in block 2 only, nothing below it is part of the graph: autograd skips that backward."""
    trainer, model, batch = prepared(make_cfg(tiny_model_dir("llama"), data_dir, tmp_path / "run", layers="[2]"))
    needs_grad = {}
    base = model.get_base_model()
    modules = {"embeddings": base.model.embed_tokens} | {f"block {i}": base.model.layers[i] for i in range(3)}

    def record(name: str):
        def hook(module, args, out):
            needs_grad[name] = (out[0] if isinstance(out, tuple) else out).requires_grad

        return hook

    for name, module in modules.items():
        module.register_forward_hook(record(name))
    loss_and_grads(trainer, model, batch)
    assert needs_grad == {"embeddings": False, "block 0": False, "block 1": False, "block 2": True}


def test_unsupported_logit_postprocessing_is_detected():
    from superlora.training.speed import target_only_unsupported

    model = tiny_model("gemma3")
    assert target_only_unsupported(model) is None
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in target_only_unsupported(model)


def test_bench_runs_end_to_end_and_writes_the_table(tiny_model_dir, tmp_path):
    """Every arm but compile (a minute to compile even a tiny model), 2 steps, 1 repeat: table and JSON."""
    data = write_e2e(tmp_path / "bench-e2e", rows=48)
    out = tmp_path / "bench" / "tiny.json"
    items = [f"model={tiny_model_dir('llama')}", f"task.source={data}", "data.max_length=48", "optim.batch_size=4"]
    two_cores = (os.cpu_count() or 1) >= 2  # the threads arm tries the other thread count: 2
    arms = "off,bf16,target,group,eager,recipe,no-target" + (",threads" if two_cores else "")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "superlora", "bench", *items, "--steps", "2", "--repeats", "1", "--arms", arms]
    done = subprocess.run(
        [*command, "--rss", "inprocess", "--out", str(out)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads(out.read_text())
    rows = {row["key"]: row for row in result["arms"]}
    expected = ["ref", "off", "bf16", "target", "group", "eager", "recipe", "no-target"]
    expected += ["threads"] if two_cores else []
    assert list(rows) == expected
    assert rows["ref"]["ratio_to_ref"] == 1.0
    for row in rows.values():
        assert (
            row["tokens_per_s"] > 0 and row["peak_rss_mb"] > 0 and 0 < row["mfu_best_peak"] <= row["mfu_own_dtype_peak"]
        )
    # same batches, same computation: superlora's path with switches off reproduces the reference's losses
    assert rows["off"]["max_loss_diff_vs_ref"] < 1e-5
    assert rows["target"]["max_loss_diff_vs_ref"] < 1e-5
    assert rows["group"]["max_loss_diff_vs_ref"] is None  # other batches: not compared
    assert rows["recipe"]["threads"] == 1 and (not two_cores or rows["threads"]["threads"] == 2)
    assert rows["recipe"]["speed"]["bf16"] == "auto" and result["peak_gflops"]["1"]["bf16"] > 0
    assert rows["bf16"]["bf16"] is True  # named in --arms: it runs even where bf16 does not pay
    assert rows["recipe"]["bf16"] is result["auto"]["bf16"]["enabled"]
    assert "bf16 " in result["auto"]["bf16"]["reason"] and "GFLOP/s" in result["auto"]["bf16"]["reason"]
    assert len(result["runs"]["recipe"][0]["step_s"]) == 2

    table = out.with_suffix(".txt").read_text()
    assert table.strip() in done.stdout
    for row in rows.values():
        assert row["name"] in table
    assert "reference: plain Trainer, fp32" in table and " 1.00 " in table
    assert "model FLOPs per step" in table and "matmul peak" in table and "auto choices" in table


def test_bench_peak_rss_from_fresh_processes(tiny_model_dir, tmp_path):
    """The default RSS method trains each arm again in a spawned process: memory held here is not counted."""
    from superlora.bench import report, runner
    from superlora.memory import rss_mb

    data = write_e2e(tmp_path / "bench-e2e", rows=48)
    items = [f"model={tiny_model_dir('gpt2')}", f"task.source={data}", "data.max_length=48", "optim.batch_size=4"]
    ballast = torch.ones(1_000_000_000, dtype=torch.uint8)  # 1 GB resident in this process only
    result = runner.bench(load_config(TrainConfig, None, items), steps=1, repeats=1, warmup=1, keys=["recipe"])
    here = rss_mb()
    del ballast
    peaks = {row["key"]: row["peak_rss_mb"] for row in result["arms"]}
    assert list(peaks) == ["ref", "recipe"]
    assert all(100 < peak < here - 800 for peak in peaks.values()), (peaks, here)
    assert "in a fresh process" in report.format_table(result)


# -----------------------------------------------------------------------------
# auto choices in a real run

AUTO = {"speed.bf16": "auto", "speed.threads": "auto", "speed.attention": "auto"}


@pytest.mark.parametrize(
    ("cpu", "fp32", "bf16"), [("AVX2 only, bf16 emulated", 85.0, 0.5), ("AVX512-BF16 + AMX", 156.0, 995.0)]
)
def test_a_run_says_and_records_its_auto_choices(
    cpu, fp32, bf16, tiny_model_dir, data_dir, tmp_path, monkeypatch, capsys
):
    """With each CPU kind's measurements injected into the probe, the run follows them, prints why, records it."""
    from superlora import machine
    from superlora.machine import MatmulRate
    from superlora.training.rundir import read_log
    from superlora.training.trainer import train

    monkeypatch.setenv("SUPERLORA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        machine, "matmul_rate", lambda dtype, *a, **k: MatmulRate(fp32 if dtype == torch.float32 else bf16, 0.01)
    )
    cfg = make_cfg(tiny_model_dir("llama"), data_dir, tmp_path / "run", **AUTO)
    train(cfg)
    out = capsys.readouterr().out
    meta = json.loads((tmp_path / "run" / "run.json").read_text())["speed"]
    enabled = bf16 > fp32
    assert meta["bf16"]["enabled"] is enabled and meta["bf16"]["source"] == "probe"
    assert (meta["bf16"]["fp32_gflops"], meta["bf16"]["bf16_gflops"]) == (fp32, bf16)
    assert f"bf16 {'on' if enabled else 'off'} (auto: bf16 matmul {bf16:,.1f} GFLOP/s vs fp32 {fp32:,.1f}" in out
    assert meta["threads"]["reason"] in out and meta["threads"]["threads"] >= 1
    assert meta["attention"]["attention"] == ("eager" if enabled else "sdpa")
    assert meta["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "auto" in (tmp_path / "run" / "config.yaml").read_text()  # the recipe as written: re-decided on resume
    assert len(read_log(tmp_path / "run" / "log.jsonl")) == 6


def test_auto_speed_keeps_the_loss_of_the_switches_it_chose(tiny_model_dir, data_dir, tmp_path, monkeypatch):
    """auto decides, it does not change the computation: the same losses as the decided switches written out."""
    from superlora.training.rundir import read_log
    from superlora.training.trainer import train

    monkeypatch.setenv("SUPERLORA_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_dir("llama")
    train(make_cfg(model_dir, data_dir, tmp_path / "auto", **AUTO))
    chosen = json.loads((tmp_path / "auto" / "run.json").read_text())["speed"]
    explicit = {
        "speed.bf16": str(chosen["bf16"]["enabled"]).lower(),
        "speed.threads": chosen["threads"]["threads"],
        "speed.attention": chosen["attention"]["attention"],
    }
    train(make_cfg(model_dir, data_dir, tmp_path / "explicit", **explicit))
    losses = [[r["loss"] for r in read_log(tmp_path / run / "log.jsonl")] for run in ("auto", "explicit")]
    assert len(losses[0]) == 6
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
def test_training_runs_on_cuda_with_bf16_where_the_gpu_supports_it(tiny_model_dir, data_dir, tmp_path):
    from superlora.training.rundir import read_log
    from superlora.training.trainer import train

    cfg = make_cfg(tiny_model_dir("llama"), data_dir, tmp_path / "run", **AUTO, **{"speed.target_only_logits": "true"})
    summary = train(cfg)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())["speed"]
    assert meta["device"] == "cuda" and meta["bf16"]["source"] == "cuda"
    assert meta["bf16"]["enabled"] is torch.cuda.is_bf16_supported()
    assert meta["attention"]["attention"] == "sdpa"
    losses = [r["loss"] for r in read_log(tmp_path / "run" / "log.jsonl")]
    assert len(losses) == 6 and all(loss == loss for loss in losses) and summary["steps"] == 6


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_device_cuda_without_a_gpu_is_one_line(tiny_model_dir, data_dir, tmp_path):
    items = [f"model={tiny_model_dir('llama')}", f"task.source={data_dir}", f"output_dir={tmp_path / 'run'}"]
    done = subprocess.run(
        [sys.executable, "-m", "superlora", "train", *items, "device=cuda"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "superlora: error: device=cuda, but torch sees no CUDA GPU (use device=auto or device=cpu)"
    ]
    assert not (tmp_path / "run").exists()


# -----------------------------------------------------------------------------
# 16-bit dropout masks


def test_dropout16_keeps_each_value_with_probability_1_minus_p_and_preserves_the_mean():
    from superlora.training.speed import Dropout16

    torch.manual_seed(0)
    x = torch.randn(64, 128, 576)  # 4.7M values
    drop = Dropout16(0.1).train()
    y = drop(x)
    kept = y != 0
    scale = 65536 / round(65536 * 0.9)
    assert abs(kept.float().mean().item() - 0.9) < 1e-3
    torch.testing.assert_close(y[kept], x[kept] * scale)  # kept values scaled by exactly 1 / P(keep)
    ones = Dropout16(0.1).train()(torch.ones(4_000_000))
    assert abs(ones.mean().item() - 1.0) < 2e-3  # unbiased, like nn.Dropout
    masks = [Dropout16(0.5).train()(torch.ones(1000)) != 0 for _ in range(2)]
    assert not torch.equal(masks[0], masks[1])  # a fresh mask every call
    assert abs(torch.stack(masks).float().mean().item() - 0.5) < 0.05


def test_dropout16_is_the_identity_in_eval_and_at_p_0_and_its_gradient_is_its_mask():
    from superlora.training.speed import Dropout16

    x = torch.randn(3, 7, 16, requires_grad=True)
    assert Dropout16(0.3).eval()(x) is x and Dropout16(0.0).train()(x) is x
    torch.manual_seed(1)
    y = Dropout16(0.3).train()(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * (65536 / round(65536 * 0.7)))
    torch.manual_seed(1)
    torch.testing.assert_close(Dropout16(0.3).train()(x), y)  # from torch's generator: seeded, checkpointed


def test_fast_dropout_replaces_every_lora_dropout_and_leaves_eval_outputs(tiny_model_dir, data_dir, tmp_path):
    from superlora.training.speed import Dropout16

    cfg = make_cfg(tiny_model_dir("llama"), data_dir, tmp_path / "run", **{"lora.dropout": 0.1})
    trainer, model, batch = prepared(cfg)
    model.eval()
    with torch.no_grad():
        before = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    from superlora.training.speed import fast_lora_dropout

    assert fast_lora_dropout(model) == 2 * 3  # q and v in each of the 3 blocks
    assert not [m for n, m in model.named_modules() if "lora_dropout" in n and type(m) is torch.nn.Dropout]
    assert len([m for m in model.modules() if isinstance(m, Dropout16)]) == 6
    with torch.no_grad():
        after = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(after, before, rtol=0, atol=0)


@pytest.mark.skipif(
    bool(os.environ.get("ATEN_CPU_CAPABILITY")),
    reason="torch 2.13's inductor gives wrong dropout gradients (plain nn.Dropout + Linear too) when "
    "ATEN_CPU_CAPABILITY lowers the kernels below what the CPU has",
)
@pytest.mark.parametrize("bf16", [False, True])
def test_dropout16_runs_inside_torch_compile(bf16):
    """Regression: compiled, the 16-bit mask's int16 view (and, under bf16, a graph break around it) corrupted the
    heap (free(): invalid pointer); traced, Dropout16 is torch's dropout, which inductor fuses."""
    from superlora.training.speed import Dropout16

    torch.manual_seed(0)
    drop, linear = Dropout16(0.1).train(), torch.nn.Linear(64, 4)
    compiled = torch.compile(lambda x: linear(drop(x)).float().sum(), dynamic=True)
    for shape in [(16, 9, 64), (16, 7, 64), (8, 3, 64)]:
        x = torch.randn(*shape, requires_grad=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = compiled(x)
        loss.backward()
        assert torch.isfinite(x.grad).all()
        dropped = (x.grad == 0).float().mean().item()
        assert 0.03 < dropped < 0.2  # about p of the inputs dropped: their gradient is 0

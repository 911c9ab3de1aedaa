"""QLoRA (``quantize: nf4|fp4|int8``) on tiny random models: it learns, survives an eval pass, resumes exactly,
and every verb that loads the adapter rebuilds the quantised base it was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import test_training
from superlora.cli import main
from superlora.config import load_config
from superlora.training.config import TrainConfig
from superlora.training.rundir import read_log
from test_training import train_cfg, write_e2e

pytest.importorskip("bitsandbytes")
base_args, data_dir = test_training.base_args, test_training.data_dir  # the tiny-run fixtures, shared


def lora_grads(model) -> list[torch.Tensor | None]:
    return [p.grad for n, p in model.named_parameters() if "lora_" in n]


@pytest.mark.parametrize("method", ["nf4", "fp4", "int8"])
def test_quantized_layers_compute_with_their_dequantised_weights(method):
    """A bnb layer's output is x @ dequantised(W).T + b: what a merge into the dequantised base reproduces."""
    from superlora.models.quantize import dequantized_weight, quantized_layer

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 96), torch.randn(5, 64)
    layer = quantized_layer(linear, method, torch.float32)
    weight = dequantized_weight(layer)
    assert 0 < (weight - linear.weight).abs().max() < (0.05 if method != "int8" else 0.002)  # rounded, but close
    torch.testing.assert_close(layer(x).float(), x @ weight.T + linear.bias, rtol=1e-4, atol=1e-4)


def test_quantizing_twice_gives_the_same_base(tiny_model_dir):
    """A resumed QLoRA run re-quantises its base: it must be the very base the checkpoint trained against."""
    from superlora.models import load_model
    from superlora.models.quantize import dequantized_weight, quantize_blocks

    folder = tiny_model_dir("llama")
    a, b = load_model(str(folder)), load_model(str(folder))
    done = quantize_blocks(a.model, a.arch.blocks_path, "nf4")
    quantize_blocks(b.model, b.arch.blocks_path, "nf4")
    assert done.layers == 7 * a.arch.num_blocks  # q, k, v, o, gate, up, down in every block
    name = f"{a.arch.blocks_path}.1.mlp.down_proj"
    assert torch.equal(dequantized_weight(a.model.get_submodule(name)), dequantized_weight(b.model.get_submodule(name)))
    assert type(a.model.lm_head) is torch.nn.Linear  # the head stays in full precision, as in QLoRA


@pytest.mark.parametrize("bf16", [False, True])
def test_lora_gradients_still_flow_after_an_eval_pass(tiny_model_dir, base_args, bf16):
    """bitsandbytes 0.50 on AVX512-BF16 CPUs repacks 4-bit weights on the first no-grad forward, after which
    LoRA gradients are None and the loss stops moving (PLATFORM-NOTES). The held-out loss is such a pass."""
    from superlora.models.quantize import set_compute_dtype
    from superlora.training.plan import plan_run
    from superlora.training.trainer import attach_lora, quantize_base

    plan = plan_run(train_cfg(base_args(tiny_model_dir("llama"), quantize="nf4")))
    quantize_base(plan)
    model = attach_lora(plan)
    set_compute_dtype(model, torch.bfloat16 if bf16 else torch.float32)
    ids = torch.tensor([plan.dataset.rows[0]["input_ids"]])
    with torch.no_grad():
        model.eval()
        model(input_ids=ids)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(input_ids=ids, labels=ids).loss.backward()
    grads = lora_grads(model)
    assert grads and all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_qlora_run_learns_records_its_base_and_evaluates_on_it(tiny_model_dir, base_args, tmp_path):
    from superlora.evaluation.decode import attach_adapter
    from superlora.models import load_model
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    items = base_args(model_dir, quantize="nf4", **{"optim.max_steps": 16, "optim.lr": 0.05})
    summary = train(train_cfg(items))
    run = Path(train_cfg(items).output_dir)
    losses = [r["loss"] for r in read_log(run / "log.jsonl")]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.1, losses
    assert summary["quantize"] == "nf4"
    record = json.loads((run / "adapter" / "superlora.json").read_text())
    assert record["quantized"]["method"] == "nf4" and record["quantized"]["layers"] == 21
    assert json.loads((run / "run.json").read_text())["quantized"]["method"] == "nf4"

    import bitsandbytes as bnb

    loaded = load_model(str(model_dir))
    model = attach_adapter(loaded.model, run)  # evaluate's loader: the base is quantised as in training
    down = model.get_submodule("base_model.model.model.layers.0.mlp.down_proj")
    assert isinstance(down, bnb.nn.Linear4bit)


def test_qlora_resume_reproduces_the_uninterrupted_run(tiny_model_dir, base_args):
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    steps = {"optim.max_steps": 8, "optim.lr": 0.01, "quantize": "nf4"}
    train(train_cfg(base_args(model_dir, "full", **steps)))
    half = base_args(model_dir, "half", **steps)
    train(train_cfg([*half, "optim.max_steps=8"]))  # the same run, then resumed from its step-4 checkpoint
    run = Path(train_cfg(half).output_dir)
    for path in (run / "adapter", run / "summary.json", run / "checkpoints" / "checkpoint-8"):
        if path.is_dir():
            import shutil

            shutil.rmtree(path)
        else:
            path.unlink()
    train(train_cfg([*half, "resume=true"]))
    full = [r["loss"] for r in read_log(run.parent / "full" / "log.jsonl")]
    resumed = [r["loss"] for r in read_log(run / "log.jsonl")]
    assert len(resumed) == 8
    torch.testing.assert_close(resumed, full, rtol=1e-5, atol=1e-6)


def test_an_unknown_quantize_method_is_one_line_before_any_run_exists(tiny_model_dir, base_args, tmp_path, capsys):
    items = base_args(tiny_model_dir("llama"), quantize="nf5")
    assert main(["train", *items]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "model shards" not in line]  # the fixture
    assert len(err) == 1 and "nf5" in err[0] and "nf4" in err[0], err
    assert not (tmp_path / "run").exists()


def test_a_recipe_may_say_quantize_null(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("quantize: null\n")
    assert load_config(TrainConfig, recipe, None).quantize is None


def test_a_qlora_merge_computes_what_the_qlora_model_did(tiny_model_dir, base_args, tmp_path):
    """The adapter corrects the quantised base: merged into that base dequantised, the plain model's logits equal
    the QLoRA model's; merged into the original fp32 base they would not."""
    from superlora.evaluation.decode import attach_adapter
    from superlora.models import load_model
    from superlora.training.merge import merged_model
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    items = base_args(model_dir, quantize="nf4", **{"optim.max_steps": 8, "optim.lr": 0.05})
    train(train_cfg(items))
    run = Path(train_cfg(items).output_dir)
    ids = torch.tensor([[5, 17, 33, 8, 41, 12, 9]])
    qlora = attach_adapter(load_model(str(model_dir)).model, run)
    merged, _, _ = merged_model(run)
    with torch.no_grad():
        want, got = qlora(input_ids=ids).logits, merged(input_ids=ids).logits
        plain = load_model(str(model_dir)).model(input_ids=ids).logits
    assert not any("bitsandbytes" in type(m).__module__ for m in merged.modules())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - plain).abs().max() > 1e-3  # the adapter and the rounding are both in it


def test_the_bench_has_qlora_arms_on_the_recipe(tiny_model_dir, tmp_path):
    from superlora.bench import report, runner

    data = write_e2e(tmp_path / "bench-e2e", rows=48)
    items = [f"model={tiny_model_dir('llama')}", f"task.source={data}", "data.max_length=48", "optim.batch_size=4"]
    cfg = load_config(TrainConfig, None, items)
    result = runner.bench(cfg, steps=2, repeats=1, warmup=1, keys=["recipe", "nf4", "int8"], rss="inprocess")
    rows = {row["key"]: row for row in result["arms"]}
    assert list(rows) == ["ref", "recipe", "nf4", "int8"]
    assert rows["nf4"]["quantize"] == "nf4" and rows["recipe"]["quantize"] is None
    for key in ("nf4", "int8"):
        assert rows[key]["tokens_per_s"] > 0 and rows[key]["peak_rss_mb"] > 0
        losses = result["runs"][key][0]["losses"]
        assert losses and all(0 < loss < 20 for loss in losses)
    assert "QLoRA nf4 base" in report.format_table(result)


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_a_protected_weight_is_kept_exactly_and_leaves_its_block_scale(method):
    """keep_superweights: the outlier is restored bit for bit, and the weights that shared its quantisation
    block are rounded on their own scale, far more finely than when the outlier set it."""
    from superlora.models.quantize import dequantized_weight, quantized_layer

    torch.manual_seed(0)
    linear, x = torch.nn.Linear(128, 32).requires_grad_(False), torch.randn(5, 128)
    with torch.no_grad():
        linear.weight[3, 10] = 40.0  # ~1,000x the others: a super weight
    plain = dequantized_weight(quantized_layer(linear, method, torch.float32))
    layer = quantized_layer(linear, method, torch.float32, protect=((3, 10),))
    held = dequantized_weight(layer)
    assert held[3, 10] == linear.weight[3, 10]
    neighbours = slice(0, 64) if method == "nf4" else slice(None)  # nf4: its block of 64; int8: its row
    error = lambda w: float((w[3, neighbours] - linear.weight[3, neighbours]).abs().sum())  # noqa: E731
    assert error(held) < error(plain) / 10
    torch.testing.assert_close(layer(x).float(), x @ held.T + linear.bias, rtol=1e-4, atol=1e-4)


def test_a_keep_superweights_run_records_them_and_every_loader_restores_them(tiny_model_dir, base_args, tmp_path):
    """The coordinates go into the adapter's record; evaluation rebuilds the protected base from it, and the
    merge holds the original super weight where a plain QLoRA merge holds its rounding."""
    from superlora.evaluation.decode import attach_adapter
    from superlora.models import load_model
    from superlora.models.quantize import protected_delta
    from superlora.training.merge import merged_model
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    sw = tmp_path / "sw.json"
    sw.write_text(json.dumps({"super_weights": [{"coordinate": "1:5:7", "block": 1, "proven": True}]}))
    extra = {"quantize": "nf4", "keep_superweights": "true", "superweights": str(sw), "optim.max_steps": 4}
    items = base_args(model_dir, **extra)
    train(train_cfg(items))
    run = Path(train_cfg(items).output_dir)
    record = json.loads((run / "adapter" / "superlora.json").read_text())["quantized"]
    assert record["superweights"] == ["1:5:7"]

    model = attach_adapter(load_model(str(model_dir)).model, run)
    rows, cols, _ = protected_delta(model.get_submodule("base_model.model.model.layers.1.mlp.down_proj"))
    assert rows.tolist() == [5] and cols.tolist() == [7]
    original = load_model(str(model_dir)).model.model.layers[1].mlp.down_proj.weight[5, 7]
    merged, _, _ = merged_model(run)
    assert merged.model.layers[1].mlp.down_proj.weight[5, 7] == original  # LoRA is on q, v: down_proj is the base's


def test_keep_superweights_without_a_quantised_base_is_one_line(tiny_model_dir, base_args, tmp_path, capsys):
    assert main(["train", *base_args(tiny_model_dir("llama"), keep_superweights="true")]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "model shards" not in line]
    assert len(err) == 1 and "quantize" in err[0], err
    assert not (tmp_path / "run").exists()


def test_the_app_serves_a_qlora_adapter_and_its_explorer_refuses_4bit_weights(tiny_model_dir, base_args):
    """Serving rebuilds the quantised base; zeroing one weight of it is refused in one line (4-bit codes)."""
    pytest.importorskip("gradio")
    import superlora.app.ui  # noqa: F401  (the offline environment, before Gradio loads)
    from superlora.app.generate import explore
    from superlora.app.limits import InputError
    from superlora.app.state import AppState
    from superlora.training.trainer import train

    model_dir = tiny_model_dir("llama")
    items = base_args(model_dir, quantize="nf4", **{"optim.max_steps": 2})
    train(train_cfg(items))
    state = AppState.load(str(model_dir), [train_cfg(items).output_dir])
    with pytest.raises(InputError, match="quantised \\(nf4"):
        explore(state, "the capital of france", "1:5:7", 0.0, 4, "run")

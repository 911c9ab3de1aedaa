"""``superlora train``: LoRA SFT of any task with the Hugging Face Trainer, resumable and multi-process.

The loop is the stock ``transformers.Trainer`` (``hf``: checkpoints renamed into place atomically, the run
log, the held-out loss). This module reads top to bottom as a run goes: validate everything before anything
is written (``plan``), attach layer-selective adapters, choose the speed switches for this machine
(``speed``), train, save the adapter and a summary (see ``rundir``).

Data parallel runs use the standard launchers; the recipe is unchanged and ``optim.batch_size``
is per process (effective batch = batch_size x processes x grad_accum):

    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 -m superlora train RECIPE      # CPU cores, gloo
    torchrun --nproc_per_node 8 -m superlora train RECIPE                        # 8 GPUs, nccl
    torchrun --nnodes 2 --node_rank I --rdzv-endpoint HOST:PORT --nproc_per_node 8 -m superlora train RECIPE
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import TrainerCallback, TrainerState, set_seed
from transformers.pytorch_utils import Conv1D

from superlora import memory
from superlora.config import to_dict
from superlora.data.collate import PadCollator
from superlora.machine import cpu_info
from superlora.models.loading import head_module_names
from superlora.models.quantize import Quantized, set_compute_dtype
from superlora.training import rundir
from superlora.training.adapters import write_base_record
from superlora.training.config import TrainConfig
from superlora.training.hf import (
    AtomicCheckpointTrainer,
    HeldoutLoss,
    RunLog,
    check_weights,
    training_arguments,
    write_failed,
)
from superlora.training.layers import adapted_blocks
from superlora.training.plan import Plan, batch_rows, plan_run, resolve_device
from superlora.training.speed import speed_setup

if TYPE_CHECKING:
    from peft import PeftModel


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def say(*args: Any) -> None:
    """Print once per job, not once per process."""
    if is_main_process():
        print(*args, flush=True)


def print_trainable(model: PeftModel) -> tuple[int, int]:
    """The PEFT one-liner, returned as numbers for the summary."""
    trainable, total = model.get_nb_trainable_parameters()
    say(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")
    return trainable, total


def quantize_base(plan: Plan) -> Quantized | None:
    """QLoRA (``quantize``): the frozen blocks in 4 or 8 bits, before ``attach_lora`` wraps them."""
    if plan.cfg.quantize is None:
        return None
    from peft import prepare_model_for_kbit_training

    from superlora.models.quantize import quantize_blocks

    done = quantize_blocks(
        plan.loaded.model, plan.loaded.arch.blocks_path, plan.cfg.quantize, superweights=plan.protected
    )
    # its default turns gradient checkpointing on: ~28% slower for models this size, and not asked for
    prepare_model_for_kbit_training(plan.loaded.model, use_gradient_checkpointing=False)
    return done


def attach_lora(plan: Plan) -> PeftModel:
    """Wrap the base model (for QLoRA already quantised by ``quantize_base``) with adapters on ``plan.targets``."""
    from peft import LoraConfig, get_peft_model
    from peft.utils.constants import DUMMY_TARGET_MODULES

    lora = plan.cfg.lora
    model = plan.loaded.model
    if next(model.parameters()).dtype != torch.float32:
        model.float()  # CPU training: fp32 master weights; bf16 speed comes from autocast (speed.bf16)
    conv1d = any(isinstance(model.get_submodule(name), Conv1D) for name in plan.targets)
    classifier = plan.loaded.head == "classifier"
    config = LoraConfig(
        task_type="SEQ_CLS" if classifier else "CAUSAL_LM",
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=plan.targets or DUMMY_TARGET_MODULES,  # none (layers: none): only the head trains
        modules_to_save=head_module_names(model) if classifier else None,  # the new head, trained in full
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores W as [in, out]
        use_rslora=lora.rslora,
        use_dora=lora.dora,
    )
    set_seed(plan.cfg.seed)  # the adapter's initial A matrices
    peft_model = get_peft_model(model, config)
    got = adapted_blocks(peft_model, plan.loaded.arch)
    if got != plan.blocks:
        raise RuntimeError(f"adapters landed in blocks {got}, expected {plan.blocks}")
    return peft_model


def heldout_loss(model: torch.nn.Module, plan: Plan) -> dict:
    """The loss over the held-out rows with the training mask (``HeldoutLoss``)."""
    from superlora.evaluation.loss import mean_token_loss

    return mean_token_loss(model, plan.heldout, plan.template.pad_id(plan.loaded.tokenizer), plan.cfg.optim.batch_size)


def peak_rss_mb() -> float:
    """Peak resident memory since the run started (max over processes when distributed)."""
    rss = memory.peak_rss_mb()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        value = torch.tensor([rss], dtype=torch.float64)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        rss = float(value.item())
    return round(rss, 1)


def final_state(plan: Plan) -> TrainerState | None:
    """The trainer state of the checkpoint being resumed when it is the run's last step (else None).

    Resuming such a checkpoint must not train on: the Trainer would run one more step past ``max_steps``.
    """
    if plan.resume_from is None:
        return None
    state = TrainerState.load_from_json(str(plan.resume_from / "trainer_state.json"))
    return state if state.max_steps > 0 and state.global_step >= state.max_steps else None


def finished_summary(run: Path) -> dict | None:
    """The summary of a run that wrote its adapter and summary: resuming it has nothing to do."""
    folder = rundir.open_run(run, strict=False)
    return folder.summary if folder.adapter is not None and folder.summary else None


def train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None = None) -> dict:
    """Run (or resume) one fine-tuning job; return the summary that is also written to summary.json.

    The main process holds the run folder's lock throughout: a second ``train`` on it is refused.
    """
    lock = rundir.locked(Path(cfg.output_dir)) if is_main_process() else contextlib.nullcontext()
    with lock:
        return _train(cfg, callbacks)


def _train(cfg: TrainConfig, callbacks: list[TrainerCallback] | None) -> dict:
    t0 = time.perf_counter()
    memory.release_memory()  # whatever ran before in this process (a study's decoding) is not this run's peak
    memory.reset_peak_rss()
    plan = plan_run(cfg)
    cfg, run = plan.cfg, plan.run
    final = final_state(plan)
    if final is not None and (done := finished_summary(run)) is not None:
        say(f"{run} already finished ({final.global_step} of {final.max_steps} steps): nothing to resume")
        say(f"adapter: {run / 'adapter'}")
        return done
    quantized = quantize_base(plan)
    model = attach_lora(plan)
    fast = speed_setup(model, plan.loaded, cfg.speed, batch_rows(plan), resolve_device(cfg.device))
    if quantized is not None:  # 4-bit layers dequantise to the dtype the matmuls run in: bf16 where it is fast
        set_compute_dtype(model, torch.bfloat16 if fast.speed.bf16 else torch.float32)
        fast.notes.append(f"QLoRA: {quantized.describe()}, computing in {'bf16' if fast.speed.bf16 else 'fp32'}")
    args = training_arguments(dataclasses.replace(cfg, speed=fast.speed), run)
    _ = args.device  # sets up the process group under torchrun (a rendezvous: all ranks validated)
    world_size = args.world_size

    if is_main_process():
        if plan.resume_from is None and not cfg.resume:
            meta = {
                "model": cfg.model,
                "base_source": plan.loaded.source,
                "base_fingerprint": plan.fingerprint,
                "blocks": plan.blocks,
                "target_modules": plan.targets,
                "num_blocks": plan.loaded.arch.num_blocks,
                "task": to_dict(cfg.task),
                "template": plan.template.record(plan.loaded.tokenizer),
                "head": plan.task.head,
                **({"labels": list(plan.task.labels)} if plan.task.head == "classifier" else {}),
                "speed": fast.choices,
                **({"quantized": quantized.to_dict()} if quantized else {}),
                **({"probe": plan.probe} if plan.probe else {}),
            }
            rundir.create_run_dir(run, to_dict(dataclasses.replace(cfg, resume=False)), meta)
        else:
            rundir.clean_staging(run)
            step = int(plan.resume_from.name.split("-")[-1]) if plan.resume_from else 0
            rundir.truncate_log(run / "log.jsonl", step)
            rundir.truncate_log(run / rundir.EVAL_LOG, step)
    if world_size > 1:
        torch.distributed.barrier()

    say(f"run: {run}  model: {cfg.model}  blocks: {plan.blocks} of {plan.loaded.arch.num_blocks}")
    say(f"{fast.notes[0]}; threads/process: {fast.notes[1]}")
    dropped = (
        f" ({plan.dataset.dropped} with no target token within max_length left out)" if plan.dataset.dropped else ""
    )
    heldout = f"  held-out: {len(plan.heldout)}" if plan.heldout else ""
    say(
        f"task: {cfg.task.name}  data: {len(plan.dataset)} examples{dropped}{heldout}  processes: {world_size}  "
        f"device: {fast.choices['device']}"
    )
    say(f"speed: {'; '.join(fast.notes[2:]) or 'all switches off'}")
    if plan.resume_from is not None:
        say(f"resuming from {plan.resume_from}")
        started = rundir.read_run(run)[1].get("speed", {}).get("bf16", {}).get("enabled")
        if started is not None and started != fast.speed.bf16:
            say(
                f"note: this run started with bf16 {'on' if started else 'off'}; here it trains on in "
                f"{'bf16' if fast.speed.bf16 else 'fp32'} (losses move by bf16 rounding, ~1e-2)"
            )
    if plan.loaded.head == "classifier":
        names = ", ".join(head_module_names(plan.loaded.model))
        say(f"new classification head ({names}, {len(plan.task.labels)} labels): trained whole, saved with the adapter")
    trainable, total = print_trainable(model)
    run_log = RunLog(run)
    extra: list[TrainerCallback] = []
    if plan.heldout:
        extra.append(HeldoutLoss(run, lambda m: heldout_loss(m, plan), cfg.eval_every, run_log))
    trainer = AtomicCheckpointTrainer(
        model=model,
        args=args,
        train_dataset=plan.dataset,
        data_collator=PadCollator(plan.template.pad_id(plan.loaded.tokenizer)),
        callbacks=[run_log, *extra, *(callbacks or [])],
    )
    trainer.target_only_logits = fast.target_only
    trainer.run_dir = run
    if final is None:
        trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
        state = trainer.state
    else:  # killed after its last checkpoint, before the adapter: write that checkpoint's adapter, train no more
        say(f"{plan.resume_from.name} is the run's last step: writing its adapter without training further")
        trainer._load_from_checkpoint(str(plan.resume_from))
        state = final
        run_log.start(state.global_step, state.num_input_tokens_seen)
        evals = rundir.read_log(run / rundir.EVAL_LOG)
        if extra and not (evals and evals[-1]["step"] == state.global_step):
            extra[0].on_train_end(args, state, None, model=model)
    train_time = run_log.train_seconds()  # every step's, across resumes
    check_weights(model, state.global_step, run)  # never a NaN adapter

    rss = peak_rss_mb()
    summary: dict[str, Any] = {}
    if is_main_process():

        def save_adapter(tmp: Path) -> None:
            model.save_pretrained(tmp)
            write_base_record(tmp, cfg.model, plan.fingerprint, quantized.to_dict() if quantized else None)

        try:
            rundir.write_atomic(run / "adapter", save_adapter)
        except OSError as exc:
            raise write_failed("the adapter", exc, run) from None
        losses = [r["loss"] for r in rundir.read_log(run / "log.jsonl")] if (run / "log.jsonl").is_file() else []
        tokens = state.num_input_tokens_seen  # every step's, like train_time
        summary = {
            "model": cfg.model,
            "layers": cfg.layers,
            "blocks": plan.blocks,
            "steps": state.global_step,
            "resumed_from_step": run_log.start_step or None,
            "time_and_tokens_of": "all steps",  # across resumes (summaries before 2026-12-02: the last piece's)
            "processes": world_size,
            "threads_per_process": torch.get_num_threads(),
            "cpu": cpu_info().label(),  # which machine the times are from
            "bf16": fast.speed.bf16,
            "quantize": cfg.quantize,
            "wall_time_s": round(time.perf_counter() - t0, 2),
            "train_time_s": round(train_time, 2),
            "tokens": tokens,
            "tokens_per_s": round(tokens / max(train_time, 1e-9), 1),
            "peak_rss_mb": rss,
            "trainable_params": trainable,
            "all_params": total,
            "trainable_pct": round(100 * trainable / total, 4),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
        }
        evals = rundir.read_log(run / rundir.EVAL_LOG) if (run / rundir.EVAL_LOG).is_file() else []
        if evals:
            summary |= {"heldout_loss": evals[-1]["eval_loss"], "heldout_perplexity": evals[-1]["eval_perplexity"]}
        rundir.write_json(run / "summary.json", summary)
        say(
            f"summary: {summary['steps']} steps, training {summary['train_time_s']:.1f} s"
            f"{f' (with the steps before step {run_log.start_step})' if run_log.start_step else ''}, "
            f"this process {summary['wall_time_s']:.1f} s | {summary['tokens_per_s']:,.0f} tokens/s | "
            f"peak RSS {rss:,.0f} MB | trainable params {trainable:,d} ({summary['trainable_pct']}%) | "
            f"loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}"
        )
        say(f"adapter: {run / 'adapter'}")
    sys.stdout.flush()
    return summary

"""The training loop, readable top to bottom.

SGD with momentum (or AdamW) and weight decay; the learning rate follows the poly schedule
``lr = base_lr * (1 - progress) ** poly_power`` where progress is ``step / iterations`` (or, with
``train.time_limit_minutes``, whichever of that and ``elapsed / limit`` is larger, so that a run on
a slow machine still ends on time with a fully decayed rate). The heads learn ``head_lr_mult``
times faster than the backbone.

Nothing is lost: every ``checkpoint_every`` steps ``<out>/last.pt`` is written atomically with
everything needed to continue (model, optimizer, AMP scaler, RNG state, step; the data order is a
function of the step), and a run started again with the same ``--out`` resumes exactly where it
was. Logs go to ``<out>/metrics.jsonl`` (one JSON object per line), ``<out>/curves.png`` and
``<out>/class_scores.png`` (per-class IoU of the final evaluation).
Under ``torchrun`` (see ``distributed.py``) only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..config import Config, TrainConfig, save_config
from ..data.loading import BadSampleError, build_dataset, evaluation_loader, training_loader
from ..losses import SegmentationLoss
from ..models import build_model
from ..visualize import plot_class_scores, plot_training_curves
from . import distributed
from .checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from .evaluate import evaluate_model


def needs_instances(arch: str) -> bool:
    """Whether a model of this arch trains or evaluates on instance labels."""
    return arch in ("localization", "joint", "separate")


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict]:
    """Backbone parameters at ``lr``, head parameters at ``lr * head_lr_mult``."""
    backbone, heads = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (heads if ".heads." in f".{name}" else backbone).append(parameter)
    return [{"params": backbone, "lr": lr, "initial_lr": lr},
            {"params": heads, "lr": lr * head_lr_mult, "initial_lr": lr * head_lr_mult}]


def optimizer_class_and_options(config: TrainConfig) -> tuple[type[torch.optim.Optimizer], dict]:
    """SGD with momentum (the paper's), or AdamW (faster from random initialisation), and the
    keyword options ``train:`` gives it."""
    if config.optimizer == "sgd":
        return torch.optim.SGD, {"lr": config.lr, "momentum": config.momentum, "weight_decay": config.weight_decay}
    return torch.optim.AdamW, {"lr": config.lr, "weight_decay": config.weight_decay}


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over ``parameter_groups``: the fused implementation (one kernel
    for all parameters) where this PyTorch has it for the parameters' device, the plain one
    otherwise. They compute the same update."""
    groups = parameter_groups(model, config.lr, config.head_lr_mult)
    optimizer_class, options = optimizer_class_and_options(config)
    try:
        return optimizer_class(groups, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return optimizer_class(groups, **options)


def poly_factor(progress: float, power: float) -> float:
    return max(0.0, 1.0 - progress) ** power


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` the batch-norm layers keep their statistics and affine
    parameters fixed (as the paper's Caffe ResNets did; the right choice for small per-GPU batches)."""
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
                for parameter in module.parameters():
                    parameter.requires_grad_(False)


def autocast(device: torch.device, amp: str):
    """Mixed precision context for the forward pass (losses are computed in float32)."""
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class MetricsLog:
    """Appends one JSON object per line to ``path`` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled

    def write(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Keep only the records of steps up to ``step`` (all gone for step 0)."""
        if not self.path.is_file():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and step > 0 and json.loads(line)["step"] <= step]
        self.path.write_text("".join(line + "\n" for line in kept))


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    seconds: float
    metrics: dict
    class_names: tuple[str, ...]


def _instance_config_if_needed(config: Config):
    return config.instance if config.model.arch in ("joint", "separate") else None


def _configure_determinism(config: TrainConfig) -> None:
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def train(config: Config, out_dir: str | Path, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train ``config`` into ``out_dir`` (resuming from ``out_dir/last.pt`` when present)."""
    rank_info = distributed.init_distributed()
    main_process = rank_info.is_main
    out_dir = Path(out_dir)
    tcfg = config.train
    if tcfg.batch_size % rank_info.world_size:
        raise ValueError(f"train.batch_size ({tcfg.batch_size}) is the global batch and must be divisible by the "
                         f"number of processes ({rank_info.world_size})")
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    _configure_determinism(tcfg)
    torch.manual_seed(tcfg.seed)
    device = distributed.resolve_device(tcfg.device, rank_info.local_rank)

    with_instances = needs_instances(config.model.arch)
    train_set = build_dataset(config.data, config.data.train_split, with_instances)
    val_set = build_dataset(config.data, config.eval.split or config.data.val_split, with_instances)
    class_names = train_set.class_names
    model = build_model(config.model, len(class_names)).to(device)
    set_train_mode(model, config.model.freeze_bn)
    if tcfg.sync_bn and rank_info.enabled and not config.model.freeze_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    memory_format = torch.channels_last if config.model.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = build_optimizer(model, tcfg)
    scaler = torch.amp.GradScaler(device.type, enabled=tcfg.amp == "fp16")
    criterion = SegmentationLoss(config.loss, len(class_names), config.model.output_stride)

    step, elapsed_before = 0, 0.0
    last_path = out_dir / "last.pt"
    if resume and last_path.is_file():
        state = load_checkpoint(last_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        step, elapsed_before = state["step"], state["elapsed"]
        if main_process:
            print(f"resuming from {last_path} at step {step}")

    network = model
    if rank_info.enabled:
        network = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tcfg.compile:
        network = torch.compile(network)

    def checkpoint(path: Path, elapsed: float) -> Path | None:
        if not main_process:
            return None
        return save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                "scaler": scaler.state_dict(), "step": step, "elapsed": elapsed,
                                "config": config.to_dict(), "class_names": list(class_names), "rng": rng_state()},
                               path)

    def run_evaluation(limit: int) -> dict:
        loader = evaluation_loader(config.data, val_set, limit=limit, workers=0,
                                   shard=(rank_info.rank, rank_info.world_size))
        with autocast(device, tcfg.amp):
            metrics = evaluate_model(model, loader, class_names, device, config.model.output_stride,
                                     _instance_config_if_needed(config), progress=progress and main_process,
                                     description=f"evaluating at step {step}", eval_config=config.eval)
        set_train_mode(model, config.model.freeze_bn)
        return metrics

    log = MetricsLog(out_dir / "metrics.jsonl", enabled=main_process)
    if main_process:
        log.truncate_after(step)  # a fresh run starts a fresh log; a resumed one drops what it will redo
    limit_seconds = tcfg.time_limit_minutes * 60
    loader = training_loader(config, train_set, start_step=step, rank=rank_info.rank,
                             world_size=rank_info.world_size)
    bar = tqdm(total=tcfg.iterations, initial=step, desc="training", unit="it",
               disable=not (progress and main_process), dynamic_ncols=True)
    set_train_mode(model, config.model.freeze_bn)
    start = time.perf_counter()
    window_start, window_images = start, 0
    try:
        for batch in loader:
            elapsed = elapsed_before + time.perf_counter() - start
            progress_fraction = step / tcfg.iterations
            if limit_seconds > 0:
                progress_fraction = max(progress_fraction, elapsed / limit_seconds)
            if progress_fraction >= 1.0:
                break
            factor = poly_factor(progress_fraction, tcfg.poly_power)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * factor

            images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
            targets = {key: batch[key].to(device, non_blocking=True) for key in ("semantic", "instance")
                       if key in batch}
            with autocast(device, tcfg.amp):
                outputs = network(images)
            loss, parts = criterion(outputs, targets, step)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"the loss became {loss.item()} at step {step} (parts {parts}); stopping. The last good checkpoint "
                    f"is {last_path}: lower train.lr (or use train.amp=off / bf16), check the data, and run the same "
                    "command again to resume from it")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            step += 1
            window_images += images.shape[0] * rank_info.world_size
            bar.update(1)

            if step % tcfg.log_every == 0 or step == 1:
                now = time.perf_counter()
                speed = window_images / max(now - window_start, 1e-9)
                window_start, window_images = now, 0
                lr = optimizer.param_groups[0]["lr"]
                if limit_seconds > 0 and progress_fraction > step / tcfg.iterations:
                    bar.total = max(step, round(step / max(progress_fraction, 1e-9)))  # where the time limit ends
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
                log.write({"step": step, "loss": loss.item(), **{f"loss_{k}": v for k, v in parts.items()},
                           "lr": lr, "images_per_s": speed, "elapsed": elapsed_before + now - start})
            if tcfg.checkpoint_every and step % tcfg.checkpoint_every == 0:
                checkpoint(last_path, elapsed_before + time.perf_counter() - start)
            if tcfg.eval_every and step % tcfg.eval_every == 0 and step < tcfg.iterations:
                log.write({"step": step, "eval": run_evaluation(config.eval.periodic_max_images)})
    except BadSampleError as error:
        bar.close()
        raise BadSampleError(f"{error}. Training stopped at step {step}; the last checkpoint is {last_path} "
                             "(fix or remove the file, or set data.skip_bad=true, and run again to resume)") from None
    bar.close()
    seconds = elapsed_before + time.perf_counter() - start
    checkpoint(last_path, seconds)
    final_path = out_dir / "final.pt"
    checkpoint(final_path, seconds)

    metrics = run_evaluation(config.eval.max_images)
    log.write({"step": step, "eval": metrics, "final": True})
    if main_process:
        plot_training_curves(out_dir / "metrics.jsonl", out_dir / "curves.png")
        plot_class_scores(metrics, class_names, out_dir / "class_scores.png")
    distributed.barrier()
    return TrainResult(out_dir, final_path, step, seconds, metrics, tuple(class_names))

"""The training loop, readable top to bottom.

SGD with momentum (or AdamW) and weight decay; the learning rate follows the poly schedule
``lr = base_lr * (1 - progress) ** poly_power`` where progress is ``step / iterations`` (or, with
``train.time_limit_minutes``, whichever of that and ``elapsed / limit`` is larger, so that a run on
a slow machine still ends on time with a fully decayed rate), times a linear warm-up over the first
``train.lr_warmup_iterations`` steps when that is set. The heads learn ``head_lr_mult``
times faster than the backbone. With ``train.weight_average`` an exponential moving average of the
weights (``weight_average.py``) is kept beside them; it is what ``final.pt`` holds and what is
evaluated.

Nothing is lost: every ``checkpoint_every`` steps ``<out>/last.pt`` is written atomically with
everything needed to continue (model, optimizer, AMP scaler, RNG state, step; the data order is a
function of the step), and a run started again with the same ``--out`` resumes exactly where it
was. Logs go to ``<out>/metrics.jsonl`` (one JSON object per line), ``<out>/curves.png`` and
``<out>/class_scores.png`` (per-class IoU of the final evaluation).
Under ``torchrun`` (see ``distributed.py``) only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..checkpoint import rng_state, save_checkpoint
from ..config import Config, TrainConfig, save_config
from ..data.augment import normalize
from ..data.balance import class_statistics, median_frequency_weights, repeat_factors
from ..data.base import SegmentationDataset
from ..data.loading import BadSampleError, build_dataset, evaluation_loader, training_loader
from ..files import OutputError, check_output_folder, writing
from ..losses import SegmentationLoss
from ..models.build import build_model, heads_of
from ..predictor import Predictor
from ..visualize import plot_class_scores, plot_training_curves
from .evaluate import evaluate_model
from .metrics_log import MetricsLog
from .resume import check_classes, format_differences, load_training_state, resumable_state
from .weight_average import WeightAverage


NEW_LAYERS = (".heads.", ".decoder.")  # the FCRN's parts that no pretrained backbone has


def is_new_layer(name: str) -> bool:
    """Whether the parameter or module ``name`` belongs to a head or the decoder (always trained
    from random initialisation), not to the backbone."""
    return any(part in f".{name}." for part in NEW_LAYERS)


def parameter_groups(model: nn.Module, lr: float, head_lr_mult: float) -> list[dict]:
    """Backbone parameters at ``lr``, head and decoder parameters at ``lr * head_lr_mult``."""
    backbone, heads = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (heads if is_new_layer(name) else backbone).append(parameter)
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


def warmup_factor(step: int, warmup_iterations: int) -> float:
    """The linear warm-up's share of the rate for the step after ``step`` steps: (step + 1) / N
    for the first N steps, then 1."""
    return 1.0 if step >= warmup_iterations else (step + 1) / warmup_iterations


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """``model.train()``; with ``freeze_bn`` the backbone's batch-norm layers keep their (pretrained)
    statistics and affine parameters fixed, as the paper's Caffe ResNets did (the right choice for
    small per-GPU batches). The batch norms of a head (the non-linear head's) and of the decoder
    start from nothing and always learn."""
    model.train()
    if freeze_bn:
        for name, module in model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not is_new_layer(name):
                module.eval()
                for parameter in module.parameters():
                    parameter.requires_grad_(False)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 convolutions natively: a CUDA GPU with bf16 support, or
    a CPU with AVX512-BF16 or AMX (elsewhere bf16 is emulated, and slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's, private: may go
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """``train.amp`` as it runs on ``device``: ``auto`` is ``bf16`` where ``native_bf16``, else ``off``."""
    if amp != "auto":
        return amp
    return "bf16" if native_bf16(device) else "off"


def autocast(device: torch.device, amp: str):
    """Mixed precision context for the forward pass (losses are computed in float32); ``amp`` is
    any ``train.amp`` mode, ``auto`` as ``resolve_amp`` resolves it on ``device``."""
    amp = resolve_amp(amp, device)
    if amp == "off":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


@dataclass
class TrainResult:
    out_dir: Path
    checkpoint: Path
    steps: int
    seconds: float
    metrics: dict
    class_names: tuple[str, ...]
    unwritten: tuple[str, ...] = ()  # the final outputs that could not be written (why, naming each file)


def _configure_determinism(config: TrainConfig) -> None:
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


@dataclass
class Run:
    """What a training run holds between steps (``setup`` makes it, ``train_step`` advances it)."""

    config: Config
    out_dir: Path
    rank: distributed.DistributedInfo
    device: torch.device
    model: nn.Module
    network: nn.Module  # the model as the step calls it: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    criterion: SegmentationLoss
    train_set: SegmentationDataset
    val_set: SegmentationDataset
    step: int = 0
    elapsed_before: float = 0.0  # training seconds of the run before this process resumed it
    saved_step: int | None = None  # the step last.pt holds (None: no checkpoint of this run yet)
    sample_weights: torch.Tensor | None = None  # repeat factor sampling of the training images (None: epochs)
    config_changes: dict = field(default_factory=dict)  # {"section.key": (old, new)} taken on resume
    average: WeightAverage | None = None  # train.weight_average (None: off)
    amp: str = "off"  # train.amp as it runs on this device (resolve_amp): off, bf16 or fp16

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.train_set.class_names)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.model.channels_last else torch.contiguous_format

    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"


def _build_model(config: Config, num_classes: int, rank: distributed.DistributedInfo,
                 device: torch.device) -> nn.Module:
    model = build_model(config.model, num_classes).to(device)
    set_train_mode(model, config.model.freeze_bn)
    if config.train.sync_bn and rank.enabled and not config.model.freeze_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(memory_format=torch.channels_last if config.model.channels_last else torch.contiguous_format)


def _resume(run: Run, state: dict) -> None:
    """Continue from the checkpoint ``state``: weights, optimizer, scaler, RNG state, step, elapsed time."""
    load_training_state(state, run.model, run.optimizer, run.scaler)
    if run.average is not None:  # the checkpoint's average, or (turned on now) one starting from its weights
        run.average = WeightAverage(run.model, run.average.decay)
        if "weight_average" in state:
            run.average.load_state_dict(state["weight_average"])
    run.step, run.elapsed_before = state["step"], state["elapsed"]
    run.saved_step = run.step
    if run.rank.is_main:
        changed = f" with changed settings: {format_differences(run.config_changes)}" if run.config_changes else ""
        print(f"resuming from {run.last_path} at step {run.step}{changed}")


def setup(config: Config, out_dir: str | Path, resume: bool = True) -> Run:
    """Datasets, model, optimizer and loss of ``config``; the state of ``out_dir/last.pt`` when resuming.

    Everything that can be known before the run starts is checked before ``out_dir`` is touched:
    the folder can be written, and a resumed checkpoint takes the config (``engine.resume``).
    """
    rank = distributed.init_distributed()
    out_dir, tcfg = Path(out_dir), config.train
    if tcfg.batch_size % rank.world_size:
        raise ValueError(f"train.batch_size ({tcfg.batch_size}) is the global batch and must be divisible by the "
                         f"number of processes ({rank.world_size})")
    if rank.is_main:
        check_output_folder(out_dir)
    state, changes = resumable_state(config, out_dir / "last.pt") if resume else (None, {})
    with_instances = "localization" in heads_of(config.model)
    train_set = build_dataset(config.data, config.data.training_split, with_instances)
    val_set = build_dataset(config.data, config.evaluation_split, with_instances)
    if state is not None:
        check_classes(state, tuple(train_set.class_names), out_dir / "last.pt")
    if rank.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    _configure_determinism(tcfg)
    torch.manual_seed(tcfg.seed)
    device = distributed.resolve_device(tcfg.device, rank.local_rank)
    model = _build_model(config, train_set.num_classes, rank, device)
    amp = resolve_amp(tcfg.amp, device)
    if tcfg.amp == "auto" and rank.is_main:
        print("train.amp=auto: " + (f"bfloat16 autocast (this {device.type.upper()} computes it natively; "
                                    "train.amp=off for float32)" if amp == "bf16" else "float32 (no native bfloat16 here)"))
    optimizer = build_optimizer(model, tcfg)
    sample_weights, class_weights = _balance(config, train_set, rank.is_main)
    run = Run(config, out_dir, rank, device, model, model, optimizer,
              torch.amp.GradScaler(device.type, enabled=amp == "fp16"),
              SegmentationLoss(config.loss, train_set.num_classes, model.output_stride, class_weights),
              train_set, val_set, config_changes=changes, sample_weights=sample_weights,
              average=WeightAverage(model, tcfg.weight_average) if tcfg.weight_average > 0 else None, amp=amp)
    if state is not None:
        _resume(run, state)
    if rank.enabled:
        run.network = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    if tcfg.compile:
        run.network = torch.compile(run.network)
    return run


def _balance(config: Config, train_set: SegmentationDataset, progress: bool):
    """``(image sampling weights or None, class loss weights or None)`` of ``data.repeat_threshold``
    and ``loss.class_weighting``, from one read of the training split's class maps."""
    if config.data.repeat_threshold == 0 and config.loss.class_weighting == "none":
        return None, None
    statistics = class_statistics(train_set, progress)
    sample_weights = None
    if config.data.repeat_threshold > 0:
        sample_weights = torch.from_numpy(repeat_factors(statistics.presence, config.data.repeat_threshold))
    class_weights = None
    if config.loss.class_weighting == "median_frequency":
        class_weights = torch.from_numpy(median_frequency_weights(statistics.pixels)).float()
    return sample_weights, class_weights


def train_step(run: Run, batch: dict, lr_factor: float, clock=None) -> tuple[torch.Tensor, dict[str, float]]:
    """One optimisation step on ``batch`` at ``lr_factor`` times the base learning rates.

    Args:
        clock: None, or a callable told the name of each phase as it ends (``targets``,
            ``forward``, ``loss``, ``backward``, ``optimizer``): how benchmarks time the step.

    Returns:
        ``(loss, parts)``: the scalar loss (detached) and its named parts.

    Raises:
        FloatingPointError: the loss is not finite (nothing is updated).
    """
    mark = clock or (lambda phase: None)
    for group in run.optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_factor
    pixels = batch["image"].to(run.device, non_blocking=True)
    images = normalize(pixels, run.config.data.mean, run.config.data.std).contiguous(memory_format=run.memory_format)
    labels = {key: batch[key].to(run.device, non_blocking=True) for key in ("semantic", "instance") if key in batch}
    targets = run.criterion.targets(labels)
    mark("targets")
    with autocast(run.device, run.amp):
        outputs = run.network(images)
    mark("forward")
    loss, parts = run.criterion(outputs, targets, run.step)
    mark("loss")
    if not math.isfinite(loss.item()):
        raise FloatingPointError(
            f"the loss became {loss.item()} at step {run.step} (parts {parts}); lower train.lr (or use train.amp=off "
            "/ bf16) or check the data")
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    mark("backward")
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    if run.average is not None:
        run.average.update(run.model, run.step)
    mark("optimizer")
    return loss.detach(), parts


def averaged(run: Run):
    """A context in which ``run.model`` holds the weight average (``train.weight_average``; the
    model as it is when that is off)."""
    return run.average.swapped_in(run.model) if run.average is not None else contextlib.nullcontext(run.model)


def save(run: Run, path: Path, elapsed: float) -> Path | None:
    """Write everything needed to resume into ``path`` (rank 0 only), atomically."""
    if not run.rank.is_main:
        return None
    average = {} if run.average is None else {"weight_average": run.average.state_dict()}
    save_checkpoint({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                     "scaler": run.scaler.state_dict(), "step": run.step, "elapsed": elapsed,
                     "config": run.config.to_dict(), "class_names": list(run.class_names),
                     "thing_classes": list(run.train_set.thing_classes), "rng": rng_state(), **average}, path)
    if path == run.last_path:
        run.saved_step = run.step
    return path


def stop_note(run: Run) -> str:
    """How to go on after an error stopped the run: the end of the error's message."""
    if run.saved_step is None:
        return (f"Training stopped at step {run.step}, before its first checkpoint (train.checkpoint_every = "
                f"{run.config.train.checkpoint_every}): there is nothing to resume; fix the cause and run again")
    return (f"Training stopped at step {run.step}; {run.last_path} holds step {run.saved_step}: fix the cause and "
            "run the same command again to resume from it")


@contextlib.contextmanager
def _stopping(run: Run):
    """Add ``stop_note`` to the errors that stop a run (bad data, a non-finite loss, a failed write)."""
    try:
        yield
    except (BadSampleError, FloatingPointError, OutputError) as error:
        raise type(error)(f"{error}. {stop_note(run)}") from None


def evaluate_run(run: Run, limit: int, progress: bool) -> dict:
    """Metrics of the model as it is now (its weight average, when kept) on the validation split
    (sharded under torchrun)."""
    with averaged(run):
        return _evaluate(run, limit, progress)


def _evaluate(run: Run, limit: int, progress: bool) -> dict:
    config = run.config
    loader = evaluation_loader(config.data, run.val_set, limit=limit, workers=0,
                               shard=(run.rank.rank, run.rank.world_size))
    predictor = Predictor(run.model, run.class_names, config, run.device, thing_classes=run.val_set.thing_classes)
    heads = run.model.heads
    # a localization network alone is scored on ground-truth class maps (the paper's pilot setting)
    oracle = None if "semantic" in heads else "semantic"
    # in float32 whatever train.amp: the figures are the ones `bridgeseg evaluate` gives the checkpoint
    metrics = evaluate_model(predictor, loader, run.class_names,
                             config.instance if "localization" in heads else None, config.eval.protocol,
                             oracle=oracle, progress=progress and run.rank.is_main,
                             description=f"evaluating at step {run.step}", thing_classes=predictor.thing_classes,
                             panoptic_min_area=config.eval.panoptic_min_area)
    set_train_mode(run.model, config.model.freeze_bn)
    return metrics


class _Schedule:
    """Progress through the run: ``step / iterations``, or (with a time limit) the larger of that and
    ``elapsed / limit``, so that a slow machine still ends on time with a fully decayed rate."""

    def __init__(self, config: TrainConfig, elapsed_before: float) -> None:
        self.config, self.elapsed_before = config, elapsed_before
        self.limit_seconds = config.time_limit_minutes * 60
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start

    def progress(self, step: int) -> float:
        fraction = step / self.config.iterations
        return max(fraction, self.elapsed() / self.limit_seconds) if self.limit_seconds > 0 else fraction


class _Throughput:
    """Images per second since the last logged step."""

    def __init__(self, start: float) -> None:
        self.since, self.images = start, 0

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.since, 1e-9)
        self.since, self.images = now, 0
        return rate


def _log_step(run: Run, log: MetricsLog, bar: tqdm, loss: torch.Tensor, parts: dict, progress: float,
              speed: float, elapsed: float) -> None:
    """The progress bar and the metrics line of a logged step."""
    lr = run.optimizer.param_groups[0]["lr"]
    if progress > run.step / run.config.train.iterations:
        bar.total = max(run.step, round(run.step / max(progress, 1e-9)))  # where the time limit ends
    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}", img_s=f"{speed:.1f}")
    log.write({"step": run.step, "loss": loss.item(), **{f"loss_{k}": v for k, v in parts.items()}, "lr": lr,
               "images_per_s": speed, "elapsed": elapsed})


def _loop(run: Run, log: MetricsLog, progress: bool) -> float:
    """Steps until the iterations or the time limit are used up; returns the training seconds."""
    tcfg = run.config.train
    loader = training_loader(run.config, run.train_set, start_step=run.step, weights=run.sample_weights, rank=run.rank.rank,
                             world_size=run.rank.world_size, device_type=run.device.type)
    bar = tqdm(total=tcfg.iterations, initial=run.step, desc="training", unit="it",
               disable=not (progress and run.rank.is_main), dynamic_ncols=True)
    schedule = _Schedule(tcfg, run.elapsed_before)
    throughput = _Throughput(schedule.start)
    with _stopping(run), bar:  # the bar closes first, then the error gets its note
        for batch in loader:
            fraction = schedule.progress(run.step)
            if fraction >= 1.0:
                break
            factor = poly_factor(fraction, tcfg.poly_power) * warmup_factor(run.step, tcfg.lr_warmup_iterations)
            loss, parts = train_step(run, batch, factor)
            throughput.images += batch["image"].shape[0] * run.rank.world_size
            bar.update(1)
            if run.step % tcfg.log_every == 0 or run.step == 1:
                _log_step(run, log, bar, loss, parts, fraction, throughput.rate(), schedule.elapsed())
            if tcfg.checkpoint_every and run.step % tcfg.checkpoint_every == 0:
                save(run, run.last_path, schedule.elapsed())
            if tcfg.eval_every and run.step % tcfg.eval_every == 0 and run.step < tcfg.iterations:
                log.write({"step": run.step, "eval": evaluate_run(run, run.config.eval.periodic_max_images, progress)})
    return schedule.elapsed()


def _final_outputs(run: Run, log: MetricsLog, metrics: dict) -> tuple[str, ...]:
    """The final evaluation's line in ``metrics.jsonl`` and the two plots (rank 0). A write that
    fails does not stop the others, nor lose the metrics: returns why each failed file failed."""
    if not run.rank.is_main:
        return ()
    curves, scores = run.out_dir / "curves.png", run.out_dir / "class_scores.png"
    writes = [(log.path, lambda: log.write({"step": run.step, "eval": metrics, "final": True})),
              (curves, lambda: plot_training_curves(log.path, curves)),
              (scores, lambda: plot_class_scores(metrics, run.class_names, scores))]
    unwritten = []
    for path, write in writes:
        try:
            with writing(path):
                write()
        except OutputError as error:
            unwritten.append(str(error))
    return tuple(unwritten)


def train(config: Config, out_dir: str | Path, resume: bool = True, progress: bool = True) -> TrainResult:
    """Train ``config`` into ``out_dir`` (resuming from ``out_dir/last.pt`` when present).

    Raises (with ``stop_note``: where the run can resume from): ``BadSampleError``,
    ``FloatingPointError`` (a non-finite loss), ``OutputError`` (a checkpoint or log that cannot be
    written). The final metrics are returned even when a file after them cannot be written
    (``TrainResult.unwritten``).
    """
    run = setup(config, out_dir, resume)
    log = MetricsLog(run.out_dir / "metrics.jsonl", enabled=run.rank.is_main)
    if run.rank.is_main:
        log.truncate_after(run.step)  # a fresh run starts a fresh log; a resumed one drops what it will redo
        if run.config_changes:
            log.write({"step": run.step, "config_changes": {key: list(values)
                                                            for key, values in run.config_changes.items()}})
    set_train_mode(run.model, config.model.freeze_bn)
    seconds = _loop(run, log, progress)
    final_path = run.out_dir / "final.pt"
    with _stopping(run):
        save(run, run.last_path, seconds)
        with averaged(run):  # final.pt holds the weights that are evaluated and used
            save(run, final_path, seconds)
    metrics = evaluate_run(run, config.eval.max_images, progress)
    unwritten = _final_outputs(run, log, metrics)
    distributed.barrier()
    return TrainResult(run.out_dir, final_path, run.step, seconds, metrics, run.class_names, unwritten)

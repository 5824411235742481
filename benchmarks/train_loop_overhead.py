"""Our training step against a bare PyTorch loop of the same model, batch and crop, side by side.

    python benchmarks/train_loop_overhead.py [--recipe demo|fcrn50|fcrn101] [--rounds 6] [--steps 10]
                                             [--device cpu|cuda] [--amp off|bf16] [--batch B] [--crop PX]

* **ours**: the real thing. ``engine.train.setup`` on a generated synthetic dataset (the config's
  loader: workers, augmentation; ``SegmentationLoss`` with box targets and bootstrapping; the fused
  optimizer), then ``train_step`` on batches from the real training loader. Time waiting for the
  loader is "data wait"; ``train_step``'s clock splits the rest into targets, forward, losses,
  backward and optimizer.
* **bare**: the same architecture (fresh weights) on random tensors already on the device:
  cross-entropy on the semantic head and L1 on the localization head, both on the grid of the
  config's ``loss.resolution`` (the crop, the output grid, or one twice as fine) against labels
  sampled there, and a fused AdamW step. What a step cannot cost less than.

The two alternate in rounds of ``--steps`` steps (after a warm-up of each), so that both see the
same machine; medians over rounds. Recipes: ``demo`` (configs/demo.yaml: joint ResNet-18 width 16,
OS 16 with a skip decoder to stride 4, batch 8, 128 crops), ``fcrn50`` (joint FCRN-50 OS 8, 321
crops, batch 4), ``fcrn101`` (joint FCRN-101 OS 8, 512 crops, batch 8, for a GPU with --amp
bf16). On CUDA it also prints images/s of ours over bare (the real loader must keep the device
busy) and, with --peak-tflops, the model FLOPs utilisation of both.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bridgeseg.config import load_config, resolve_config_path
from bridgeseg.data.loading import loader_workers, training_loader
from bridgeseg.data.synthetic import SceneSpec, generate_dataset
from bridgeseg.engine.train import autocast, setup, train_step
from bridgeseg.losses import SegmentationLoss
from bridgeseg.models.build import build_model

from common import describe_device, synchronize

RECIPES = {
    "demo": ("demo", []),
    "fcrn50": ("demo", ["model.depth=50", "model.width=64", "model.kernel=3", "model.dilation=12", "data.crop_size=321",
                        "train.batch_size=4", "model.channels_last=false"]),
    "fcrn101": ("demo", ["model.depth=101", "model.width=64", "model.kernel=3", "model.dilation=12",
                         "data.crop_size=512", "train.batch_size=8", "data.workers=6"]),
}
PHASES = ("data wait", "targets", "forward", "loss", "backward", "optimizer")


class Clock:
    """Seconds per phase of one step: ``mark(phase)`` ends a phase that started at the last mark."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.last = device, {}, time.perf_counter()

    def start(self) -> None:
        synchronize(self.device)
        self.last = time.perf_counter()

    def __call__(self, phase: str) -> None:
        synchronize(self.device)
        now = time.perf_counter()
        self.times[phase] = self.times.get(phase, 0.0) + now - self.last
        self.last = now


def recipe_config(args: argparse.Namespace, root: Path):
    name, overrides = RECIPES[args.recipe]
    extra = [f"data.root={root}", f"train.device={args.device}", f"train.amp={args.amp}", "train.iterations=100000",
             "train.time_limit_minutes=0", "model.init=random", "train.checkpoint_every=0", "train.eval_every=0"]
    extra += [f"train.batch_size={args.batch}"] if args.batch else []
    extra += [f"data.crop_size={args.crop}"] if args.crop else []
    return load_config(resolve_config_path(name), overrides + extra + args.set)


def ours(config, out: Path, device: torch.device):
    """A step function of the real training loop over the real loader, its clock, and the run."""
    run = setup(config, out, resume=False)
    loader = iter(training_loader(config, run.train_set, start_step=0, device_type=device.type))
    clock = Clock(device)

    def step() -> None:
        clock.start()
        batch = next(loader)
        clock("data wait")
        train_step(run, batch, 1.0, clock=clock)
    return step, clock, run


def bare(config, num_classes: int, device: torch.device):
    """A step function of the plain loop: random tensors on the device, CE + L1, fused AdamW."""
    model = build_model(config.model, num_classes, load_weights=False).to(device)
    memory_format = torch.channels_last if config.model.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format).train()
    size, batch = config.data.crop_size, config.train.batch_size
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (batch, size, size), device=device)
    boxes = torch.randn(batch, 4 * (num_classes - 1), size, size, device=device)
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, **fused)
    # the recipe's loss grid (loss.resolution): targets sampled there once, outputs resampled to it
    grid = SegmentationLoss(config.loss, num_classes, config.model.prediction_stride)
    labels = labels[:, ::grid.stride, ::grid.stride].contiguous()
    boxes = boxes[:, :, ::grid.stride, ::grid.stride].contiguous()

    def at_loss_grid(maps: torch.Tensor) -> torch.Tensor:
        return grid.at_loss_grid(maps, tuple(labels.shape[-2:])).float()

    clock = Clock(device)

    def step() -> None:
        clock.start()
        with autocast(device, config.train.amp):
            outputs = model(images)
        clock("forward")
        loss = F.cross_entropy(at_loss_grid(outputs["semantic"]), labels)
        loss = loss + F.l1_loss(at_loss_grid(outputs["localization"]), boxes)
        clock("loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clock("backward")
        optimizer.step()
        clock("optimizer")
    return step, clock


def step_flops(step) -> float:
    """FLOPs of one call of ``step`` (PyTorch's FLOP counter: convolutions and matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return float(counter.get_total_flops())


def measure(steps: dict, device: torch.device, rounds: int, per_round: int) -> dict[str, float]:
    """Median seconds per step of each step function, alternating rounds of ``per_round`` steps."""
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(per_round):
                step()
            synchronize(device)
            samples[name].append((time.perf_counter() - start) / per_round)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(config, seconds: dict, clocks: dict, steps_done: int, device, flops: float | None, peak: float | None):
    batch = config.train.batch_size
    print(f"device: {describe_device(device)}; {config.model.arch} ResNet-{config.model.depth} width "
          f"{config.model.width}, OS {config.model.output_stride} (maps at {config.model.prediction_stride}), "
          f"batch {batch} x {config.data.crop_size}^2 crops, "
          f"amp {config.train.amp}, {loader_workers(config.data.workers, device.type)} loader worker(s) "
          f"(data.workers {config.data.workers}), sample cache {config.data.cache_mb} MB")
    for name in ("ours", "bare"):
        line = f"  {name:>5}: {1 / seconds[name]:7.2f} steps/s ({seconds[name] * 1000:7.1f} ms, {batch / seconds[name]:7.1f} img/s)"
        if flops and peak:
            line += f", MFU {flops[name] / seconds[name] / (peak * 1e12):.3f}"
        print(line)
    print(f"  ratio ours / bare: {seconds['bare'] / seconds['ours']:.3f}  (target >= 0.90)")
    for name, clock in clocks.items():
        parts = ", ".join(f"{phase} {clock.times[phase] / steps_done * 1000:.1f}" for phase in PHASES
                          if phase in clock.times)
        print(f"  {name:>5} ms per step: {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=list(RECIPES), default="demo")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"))
    parser.add_argument("--batch", type=int, help="override the recipe's batch size")
    parser.add_argument("--crop", type=int, help="override the recipe's crop size")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="steps per round")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more config overrides")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s at this precision, for MFU")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "data"
        config = recipe_config(args, root)
        scene = max(128, 128 * -(-config.data.crop_size // 128))  # scenes at least as large as the crop
        generate_dataset(root, num_train=32, num_val=2, spec=SceneSpec.for_size(scene))
        mine, my_clock, run = ours(config, Path(folder) / "run", device)
        plain, plain_clock = bare(config, run.train_set.num_classes, device)
        for step in (mine, plain):
            for _ in range(3):
                step()
        flops = None
        if args.peak_tflops:
            flops = {"ours": step_flops(mine), "bare": step_flops(plain)}
        for clock in (my_clock, plain_clock):
            clock.times.clear()
        seconds = measure({"ours": mine, "bare": plain}, device, args.rounds, args.steps)
        report(config, seconds, {"ours": my_clock, "bare": plain_clock}, args.rounds * args.steps, device, flops,
               args.peak_tflops)


if __name__ == "__main__":
    main()

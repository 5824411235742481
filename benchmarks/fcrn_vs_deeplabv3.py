"""FCRN-50/101 (output stride 8, classifier kernel 3, dilation 12) vs torchvision's
``deeplabv3_resnet50/101`` (output stride 8): forward+backward step time, images/s and peak memory,
same input, side by side in one run. Each model's peak memory is measured in a fresh subprocess
(CPU: peak resident memory above the process's baseline; CUDA: ``max_memory_allocated``).

    python benchmarks/fcrn_vs_deeplabv3.py [--depth 50|101] [--size 257] [--batch 2] [--rounds 4]
                                           [--amp off|bf16] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

from bridgeseg.config import ModelConfig
from bridgeseg.models.build import build_model

from common import describe_device, interleaved_medians, peak_memory_mib


def make(name: str, classes: int):
    depth = int(name.rsplit("resnet", 1)[-1]) if "deeplab" in name else int(name.removeprefix("fcrn"))
    if name.startswith("fcrn"):
        return build_model(ModelConfig(depth=depth, output_stride=8, kernel=3, dilation=12, init="random"), classes)
    factory = getattr(torchvision.models.segmentation, f"deeplabv3_resnet{depth}")
    return factory(weights=None, weights_backbone=None, num_classes=classes, aux_loss=False)


def logits_of(name: str, outputs):
    return outputs["semantic"] if name.startswith("fcrn") else outputs["out"]


def step_for(name, model, images, labels, amp: str = "off"):
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def step():
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            outputs = logits_of(name, model(images))
        logits = torch.nn.functional.interpolate(outputs.float(), size=images.shape[-2:],
                                                 mode="bilinear", align_corners=False)
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return step


def peak_memory(name: str, args) -> float:
    """Peak memory (MiB) of training steps of one model, measured in a subprocess."""
    argv = ['x', '--measure', name, '--size', str(args.size), '--batch', str(args.batch), '--device', args.device,
            '--amp', args.amp, '--classes', str(args.classes)]
    code = (f"import sys; sys.argv = {argv!r};"
            "import fcrn_vs_deeplabv3 as b; b.main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parent)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def measure(name: str, args) -> None:
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = make(name, args.classes).to(device)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    step = step_for(name, model, images, labels, args.amp)
    print(json.dumps({"peak_mib": peak_memory_mib(lambda: (step(), step()), device)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=50, choices=(50, 101))
    parser.add_argument("--amp", default="off", choices=("off", "bf16"), help="autocast of the forward pass")
    parser.add_argument("--size", type=int, default=257)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args)
        return
    device = torch.device(args.device)
    names = (f"fcrn{args.depth}", f"deeplabv3_resnet{args.depth}")
    # memory first: on Linux a child process starts with its parent's peak RSS (ru_maxrss survives
    # fork and exec), so the parent must not have run the big models yet
    memory = {name: peak_memory(name, args) for name in names}
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    steps = {name: step_for(name, make(name, args.classes).to(device), images, labels, args.amp) for name in names}
    medians = interleaved_medians(steps, device, warmup=1, rounds=args.rounds)
    print(f"device: {describe_device(device)}; batch {args.batch} x {args.size}x{args.size}, output stride 8, "
          f"{args.classes} classes, forward + backward + SGD step, amp {args.amp}")
    for name in names:
        print(f"  {name:>20}: {medians[name] * 1000:8.0f} ms / step, {args.batch / medians[name]:7.1f} images/s, "
              f"peak memory {memory[name]:8.0f} MiB")
    ours, theirs = names
    memory_ratio = f"{memory[ours] / memory[theirs]:.2f}" if memory[theirs] > 0 else "n/a (too small to measure)"
    print(f"  ratio {ours} / {theirs}: time {medians[ours] / medians[theirs]:.2f}, memory {memory_ratio}")


if __name__ == "__main__":
    main()

"""Grouping time (candidates, votes, NMS, trace-back, region NMS) against the FCRN-50 forward
pass on the same image, side by side in one run, and how grouping grows with image size and the
number of instances.

    python benchmarks/grouping_speed.py [--size 512] [--width W] [--classes 21] [--instances 10] [--repeats 5]
                                        [--device cpu|cuda] [--no-table]

(``--size 1024 --width 2048`` gives a Cityscapes-sized frame.)

Target (issue 3): grouping at most 0.10 of the forward pass (CPU, 512 x 512, 20 classes, ~10 instances).
Maps are realistic rather than oracle: softened, noisy class scores and transforms of ground-truth
instances with noise, so that votes are not duplicates.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from bridgeseg.config import ModelConfig
from bridgeseg.grouping import InstanceConfig, group_instances
from bridgeseg.models.build import build_model
from bridgeseg.targets import box_targets

from common import describe_device, time_steps


def scene(size: int, classes: int, instances: int, seed: int = 0, width: int | None = None):
    """Random rectangles of random classes: (instance map, class map), (size, width or size) long."""
    generator = torch.Generator().manual_seed(seed)
    width = width or size
    instance = torch.zeros(size, width, dtype=torch.long)
    semantic = torch.zeros(size, width, dtype=torch.long)
    rows = torch.arange(size).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    for k in range(1, instances + 1):
        h = int(torch.randint(size // 10, size // 3, (1,), generator=generator))
        w = int(torch.randint(width // 10, width // 3, (1,), generator=generator))
        y = int(torch.randint(0, size - h, (1,), generator=generator))
        x = int(torch.randint(0, width - w, (1,), generator=generator))
        mask = (rows >= y) & (rows < y + h) & (cols >= x) & (cols < x + w)
        instance[mask] = k
        semantic[mask] = int(torch.randint(1, classes, (1,), generator=generator))
    return instance, semantic


def noisy_maps(instance, semantic, classes: int, stride: int, seed: int = 0):
    """Class probabilities and transform maps on the output grid, like a network's."""
    generator = torch.Generator().manual_seed(seed)
    labels = semantic[::stride, ::stride]
    h, w = labels.shape
    logits = torch.randn(classes, h, w, generator=generator) + 4.0 * torch.nn.functional.one_hot(labels, classes).permute(2, 0, 1)
    probs = torch.softmax(logits, dim=0)
    targets = box_targets(instance[None], semantic[None], classes, stride)
    transforms = torch.randn(classes - 1, 4, h, w, generator=generator) * 0.05
    has = targets.classes[0] > 0
    cls = (targets.classes[0] - 1).clamp(min=0)
    transforms[cls[has], :, *has.nonzero(as_tuple=True)] += targets.transforms[0].permute(1, 2, 0)[has]
    return probs, transforms.view(4 * (classes - 1), h, w)


def median_seconds(function, repeats: int, device) -> float:
    return statistics.median(time_steps(function, device, warmup=1, repeats=repeats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image height (and width unless --width)")
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--no-table", dest="table", action="store_false", help="skip the size x instances table")
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    stride = 8
    model = build_model(ModelConfig(arch="joint", depth=50, output_stride=stride, kernel=3, dilation=12, init="random"),
                        args.classes).to(device).eval()
    width = args.width or args.size
    image = torch.randn(1, 3, args.size, width, device=device)
    with torch.no_grad():
        forward = median_seconds(lambda: model(image), args.repeats, device)

    def grouping_time(size: int, instances: int, width: int | None = None) -> tuple[float, int]:
        instance, semantic = scene(size, args.classes, instances, width=width)
        probs, transforms = noisy_maps(instance, semantic, args.classes, stride)
        probs, transforms = probs.to(device), transforms.to(device)
        shape = tuple(semantic.shape)
        found = group_instances(probs, transforms, stride, shape, InstanceConfig())
        return median_seconds(lambda: group_instances(probs, transforms, stride, shape, InstanceConfig()),
                              args.repeats, device), len(found)

    seconds, found = grouping_time(args.size, args.instances, width)
    print(f"device: {describe_device(device)}; {args.size}x{width} image, {args.classes} classes, "
          f"{args.instances} instances, output stride {stride}")
    print(f"  FCRN-50 (joint, OS 8) forward: {forward * 1000:8.1f} ms")
    print(f"  grouping (steps 2-6):          {seconds * 1000:8.1f} ms  ({found} instances found)")
    print(f"  ratio grouping / forward:      {seconds / forward:.3f}  (target <= 0.10)")
    if not args.table:
        return
    print("\n  grouping time by image size and number of instances (ms):")
    sizes, counts = (256, 512, 1024), (1, 10, 30)
    print("  " + "size \\ instances".rjust(18) + "".join(f"{c:>9}" for c in counts))
    for size in sizes:
        row = [grouping_time(size, c)[0] * 1000 for c in counts]
        print("  " + f"{size}x{size}".rjust(18) + "".join(f"{t:9.1f}" for t in row))


if __name__ == "__main__":
    main()

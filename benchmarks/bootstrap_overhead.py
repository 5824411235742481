"""Cost of online bootstrapping: a full training step with the bootstrapped loss vs plain
cross-entropy, same model, same batch, measured in alternating rounds in one run.

    python benchmarks/bootstrap_overhead.py [--depth 18] [--size 193] [--batch 4] [--rounds 8]

Target (issue 2): ratio at most 1.03.
"""

from __future__ import annotations

import argparse

import torch

from bridgeseg.config import LossConfig, ModelConfig
from bridgeseg.losses import SegmentationLoss
from bridgeseg.models.build import build_model

from common import describe_device, interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--size", type=int, default=193)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(ModelConfig(depth=args.depth, output_stride=8, kernel=3, dilation=12, init="random"),
                        args.classes).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch, args.size, args.size), device=device)
    labels[:, :8] = 255
    batch = {"semantic": labels}
    losses = {
        "plain": SegmentationLoss(LossConfig(bootstrap=False), args.classes, 8),
        "bootstrapped": SegmentationLoss(LossConfig(bootstrap=True, threshold=0.6, min_kept=512), args.classes, 8),
    }

    def step_with(loss):
        def step():
            total, _ = loss(model(images), batch, step=10 ** 6)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
        return step

    medians = interleaved_medians({name: step_with(loss) for name, loss in losses.items()}, device, warmup=2,
                                  rounds=args.rounds)
    print(f"device: {describe_device(device)}; FCRN-{args.depth} OS 8, batch {args.batch} x {args.size}x{args.size}, "
          f"{args.classes} classes, loss at label resolution, K=512, t=0.6")
    for name, seconds in medians.items():
        print(f"  {name:>13}: {seconds * 1000:8.1f} ms / training step (median of {args.rounds})")
    print(f"  ratio bootstrapped / plain: {medians['bootstrapped'] / medians['plain']:.3f}  (target <= 1.03)")


if __name__ == "__main__":
    main()

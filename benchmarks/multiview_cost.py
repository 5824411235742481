"""Cost of multi-view testing: 1, 2 (flip), 5 (scales) and 10 (scales x flip) views against the
single view, same model, same image, measured in alternating rounds in one run.

    .venv/bin/python benchmarks/multiview_cost.py [--depth 18] [--size 321] [--rounds 3]

Each view runs the network on the image resized by its scale, so the cost should follow the
views' total pixel count (sum of scale^2 over views) and nothing more: the last column, time
ratio / pixel ratio, stays near 1 (the merge onto the base grid is a small extra; small views
use the machine less efficiently, which pushes the column slightly above 1 for 0.5x views).
"""

from __future__ import annotations

import argparse

import torch

from bridgeseg.config import ModelConfig
from bridgeseg.tta import make_views, predict_maps, view_size
from bridgeseg.models.build import build_model

from common import describe_device, interleaved_medians

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5)


def settings() -> dict[str, tuple[tuple[float, ...], bool]]:
    return {"1 view": ((1.0,), False), "2 views (flip)": ((1.0,), True), "5 views (scales)": (SCALES, False),
            "10 views (scales x flip)": (SCALES, True)}


def total_pixels(size: tuple[int, int], scales: tuple[float, ...], flip: bool) -> int:
    """Pixels the network sees over all views."""
    return sum(h * w for h, w in (view_size(size, view.scale) for view in make_views(scales, flip)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = ModelConfig(arch="joint", depth=args.depth, output_stride=args.output_stride, kernel=3, dilation=12,
                         init="random")
    model = build_model(config, args.classes).to(device).eval()
    image = torch.randn(1, 3, args.size, args.size, device=device)
    size = (args.size, args.size)

    def step_with(scales, flip):
        return lambda: predict_maps(model, image, args.output_stride, scales, flip)

    medians = interleaved_medians({name: step_with(*value) for name, value in settings().items()}, device,
                                  warmup=1, rounds=args.rounds)
    base_time, base_pixels = medians["1 view"], total_pixels(size, (1.0,), False)
    print(f"device: {describe_device(device)}; FCRN-{args.depth} OS {args.output_stride} joint heads, "
          f"{args.size}x{args.size} image, {args.classes} classes; scales {list(SCALES)}; median of {args.rounds}")
    print(f"  {'setting':<26}{'ms':>9}{'time x':>9}{'pixels':>11}{'pixels x':>10}{'time/pixels':>13}")
    for name, (scales, flip) in settings().items():
        pixels = total_pixels(size, scales, flip)
        ratio, pixel_ratio = medians[name] / base_time, pixels / base_pixels
        print(f"  {name:<26}{medians[name] * 1000:9.1f}{ratio:9.2f}{pixels:11d}{pixel_ratio:10.2f}"
              f"{ratio / pixel_ratio:13.2f}")


if __name__ == "__main__":
    main()

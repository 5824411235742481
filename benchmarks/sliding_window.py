"""Sliding-window inference against the whole image on a Cityscapes-size input: time and peak memory.

    .venv/bin/python benchmarks/sliding_window.py [--depth 18] [--height 1024] [--width 2048]
        [--tiles 1024 512] [--overlap 0.33] [--device cpu|cuda]

Every setting runs in its own subprocess (same model seed, same image) so that peak memory is
that setting's alone: on the CPU the peak resident set size (ru_maxrss) gained during the
prediction, on CUDA ``torch.cuda.max_memory_allocated`` during it. Time is one full
``predict_maps`` call (network + tile merging + image-resolution argmax) after a warm-up run on
the same input (``--no-warmup`` skips it to halve the run time; oneDNN then also pays for
creating its kernels once).

What to expect: the whole image's activations grow with the image; tiles cap them at the tile
size, at the price of recomputing the overlaps (tile pixels / image pixels is printed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from bridgeseg.config import ModelConfig
from bridgeseg.tta import predict_maps, tile_origins
from bridgeseg.models.build import build_model

from common import describe_device, peak_memory_mib, synchronize


def tiled_pixels(height: int, width: int, tile: int, stride: int, overlap: float) -> int:
    """Pixels the network processes over all tiles (the whole image when ``tile`` is 0)."""
    if tile <= 0:
        return height * width
    rows = [min(tile, height - o) for o in tile_origins(height, tile, stride, overlap)]
    cols = [min(tile, width - o) for o in tile_origins(width, tile, stride, overlap)]
    return sum(rows) * sum(cols)


def measure(args: argparse.Namespace, tile: int) -> dict:
    """Run one setting in this process: {"seconds", "peak_mib", "memory"}."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = ModelConfig(arch="joint", depth=args.depth, output_stride=args.output_stride, kernel=3, dilation=12,
                         init="random")
    model = build_model(config, args.classes).to(device).eval()
    image = torch.randn(1, 3, args.height, args.width, generator=torch.Generator().manual_seed(1)).to(device)

    def run():
        maps = predict_maps(model, image, args.output_stride, tile_size=tile, tile_overlap=args.overlap)
        synchronize(device)
        return maps

    seconds = 0.0

    def warm_then_timed():
        nonlocal seconds
        if args.warmup:
            run()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start

    peak = peak_memory_mib(warm_then_timed, device)
    memory = "CUDA max_memory_allocated - allocated before" if device.type == "cuda" else "CPU peak RSS gained"
    return {"seconds": seconds, "peak_mib": peak, "memory": memory, "device": describe_device(device)}


def _worker_command(args: argparse.Namespace, tile: int) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tile), "--depth", str(args.depth),
               "--output-stride", str(args.output_stride), "--height", str(args.height), "--width", str(args.width),
               "--classes", str(args.classes), "--overlap", str(args.overlap), "--device", args.device,
               "--threads", str(args.threads)]
    return command + ([] if args.warmup else ["--no-warmup"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=18)
    parser.add_argument("--output-stride", type=int, default=16)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--tiles", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--overlap", type=float, default=0.33)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        print(json.dumps(measure(args, args.worker)))
        return
    results = {}
    for tile in [0, *args.tiles]:
        completed = subprocess.run(_worker_command(args, tile), capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            raise RuntimeError(f"setting tile={tile} failed:\n{completed.stderr}")
        results[tile] = json.loads(completed.stdout.strip().splitlines()[-1])
    whole = results[0]
    print(f"device: {whole['device']}; FCRN-{args.depth} OS {args.output_stride} joint heads, "
          f"{args.height}x{args.width} image, {args.classes} classes, overlap {args.overlap}; memory: {whole['memory']}")
    print(f"  {'setting':<14}{'s':>8}{'time x':>8}{'peak MiB':>10}{'memory x':>10}{'net pixels x':>14}")
    for tile, result in results.items():
        name = "whole image" if tile == 0 else f"tiles {tile}"
        pixels = tiled_pixels(args.height, args.width, tile, args.output_stride, args.overlap)
        print(f"  {name:<14}{result['seconds']:8.2f}{result['seconds'] / whole['seconds']:8.2f}"
              f"{result['peak_mib']:10.0f}{result['peak_mib'] / max(whole['peak_mib'], 1e-9):10.2f}"
              f"{pixels / (args.height * args.width):14.2f}")


if __name__ == "__main__":
    main()

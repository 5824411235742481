"""The optimizer step that training uses (``build_optimizer``: PyTorch's fused kernel where it has
one) against PyTorch's default for-loop and foreach implementations, on the parameters of the demo
model (FCRN-18, width 16) and of FCRN-101, measured in alternating rounds in one run.

    python benchmarks/optimizer_step.py [--rounds 30] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch

from bridgeseg.config import ModelConfig, TrainConfig
from bridgeseg.engine.train import build_optimizer, optimizer_class_and_options, parameter_groups
from bridgeseg.models.build import build_model

from common import describe_device, interleaved_medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"one optimizer step, {describe_device(device)}; median ms (ratio to the for-loop version)")
    for label, model_config in (("demo FCRN-18 width 16", ModelConfig(depth=18, width=16, init="random")),
                                ("FCRN-101", ModelConfig(depth=101, init="random"))):
        model = build_model(model_config, 21).to(device)
        for parameter in model.parameters():
            parameter.grad = torch.randn_like(parameter)
        count = sum(parameter.numel() for parameter in model.parameters())
        for name in ("sgd", "adamw"):
            config = TrainConfig(optimizer=name, lr=1e-6)
            optimizer_class, options = optimizer_class_and_options(config)
            optimizers = {"ours": build_optimizer(model, config)}
            for key, foreach in (("for-loop", False), ("foreach", True)):
                groups = parameter_groups(model, config.lr, config.head_lr_mult)
                optimizers[key] = optimizer_class(groups, foreach=foreach, **options)
            medians = interleaved_medians({key: opt.step for key, opt in optimizers.items()}, device, warmup=3,
                                          rounds=args.rounds)
            base = medians["for-loop"]
            cells = "  ".join(f"{key} {1000 * value:7.2f} ({value / base:.2f})" for key, value in medians.items())
            print(f"  {label:<22} {count / 1e6:6.1f} M params  {name:<5}  {cells}")


if __name__ == "__main__":
    main()

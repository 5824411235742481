"""The optimizer and learning-rate schedule of the training loop."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from bridgeseg.config import TrainConfig
from bridgeseg.engine.train import build_optimizer, poly_factor, warmup_factor


class _TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 4, 3)
        self.heads = nn.ModuleDict({"semantic": nn.Conv2d(4, 2, 1)})

    def forward(self, x):
        return self.heads["semantic"](self.backbone(x))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_optimizer_update_equals_torch_reference(optimizer):
    """Whatever implementation build_optimizer picks (fused where it can), five steps give the
    parameters of PyTorch's plain for-loop optimizer with the same groups and settings."""
    config = TrainConfig(optimizer=optimizer, lr=0.05, head_lr_mult=10.0, weight_decay=1e-3)
    torch.manual_seed(0)
    ours, reference = _TinyModel(), _TinyModel()
    reference.load_state_dict(ours.state_dict())
    groups = [{"params": list(reference.backbone.parameters()), "lr": 0.05},
              {"params": list(reference.heads.parameters()), "lr": 0.5}]
    if optimizer == "sgd":
        plain = torch.optim.SGD(groups, momentum=config.momentum, weight_decay=1e-3, foreach=False)
    else:
        plain = torch.optim.AdamW(groups, weight_decay=1e-3, foreach=False)
    built = build_optimizer(ours, config)
    for group, lr in zip(built.param_groups, (0.05, 0.5)):
        assert group["lr"] == pytest.approx(lr)  # heads at head_lr_mult x lr
    for step in range(5):
        x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(step))
        for model, opt in ((ours, built), (reference, plain)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for (name, a), b in zip(ours.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(ours.backbone.weight, _TinyModel().backbone.weight)


def test_poly_factor():
    assert poly_factor(0.0, 0.9) == 1.0
    assert poly_factor(0.5, 0.9) == pytest.approx(0.5 ** 0.9)
    assert poly_factor(1.0, 0.9) == 0.0
    assert poly_factor(1.2, 0.9) == 0.0  # past the end (a time limit overshot): stays at zero


def test_warmup_factor_rises_linearly_then_stays_at_one():
    assert [warmup_factor(step, 4) for step in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0  # off: the paper's schedule from the first step


def test_a_run_logs_the_warmed_up_rate(synthetic_root, tmp_path):
    """The logged rate of a real run is base x poly x warm-up at each logged step."""
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.engine.train import train

    settings = [f"data.root={synthetic_root}", "data.crop_size=48", "train.batch_size=2", "train.iterations=8",
                "train.time_limit_minutes=0", "train.checkpoint_every=0", "train.log_every=1", "train.lr=0.01",
                "train.lr_warmup_iterations=4", "train.poly_power=1.0", "eval.max_images=1"]
    config = load_config(resolve_config_path("demo"), settings)
    train(config, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rates = {row["step"]: row["lr"] for row in rows if "lr" in row}
    # step s (1-based) ran with progress (s - 1) / 8 and warm-up min(1, s / 4)
    expected = {s: 0.01 * (1 - (s - 1) / 8) * min(1.0, s / 4) for s in range(1, 9)}
    assert rates == pytest.approx(expected)


def test_a_batch_gives_the_loss_it_gave_before_the_loader_was_made_faster(synthetic_root, tmp_path):
    """The loader hands over uint8 images (normalised on the device) and keeps decoded samples in
    memory; the loss of a batch must be what the float images of the old loader, read from disk
    every time, give: to float tolerance, for a batch whose images come from the cache."""
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.data.loading import StepSampler, TrainingSamples, training_loader
    from bridgeseg.engine.train import setup, train_step

    settings = [f"data.root={synthetic_root}", "data.crop_size=48", "train.batch_size=3", "train.iterations=40",
                "train.time_limit_minutes=0", "train.checkpoint_every=0", "data.copy_paste=0.5",
                "train.amp=off"]  # float32 whatever the CPU: the reference below is float32
    config = load_config(resolve_config_path("demo"), settings)
    run = setup(config, tmp_path / "run", resume=False)
    loader = iter(training_loader(config, run.train_set, start_step=0))
    batches = [next(loader) for _ in range(len(run.train_set) // 3 + 2)]  # an epoch and more: cached reads
    batch = batches[-1]
    assert batch["image"].dtype == torch.uint8
    disk = TrainingSamples(run.train_set, dataclasses.replace(config.data, cache_mb=0), config.train.seed)
    keys = StepSampler(len(run.train_set), 3, config.train.seed, 0, 40).batch(len(batches) - 1)
    samples = [disk[key] for key in keys]
    images = torch.stack([sample["image"] for sample in samples]).float() / 255
    mean, std = torch.tensor(config.data.mean).view(1, 3, 1, 1), torch.tensor(config.data.std).view(1, 3, 1, 1)
    labels = {key: torch.stack([sample[key] for sample in samples]) for key in ("semantic", "instance")}
    for key in labels:
        assert torch.equal(labels[key], batch[key])
    expected, _ = run.criterion(run.network((images - mean) / std), run.criterion.targets(labels), run.step)
    loss, _ = train_step(run, batch, 1.0)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_exactly_where_the_cpu_computes_it_natively(monkeypatch, native):
    from bridgeseg.engine.train import autocast, resolve_amp

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == ("bf16" if native else "off")
    for explicit in ("off", "bf16", "fp16"):
        assert resolve_amp(explicit, cpu) == explicit  # an explicit mode is never second-guessed
    conv = nn.Conv2d(3, 4, 3)
    with autocast(cpu, "auto"):
        out = conv(torch.randn(1, 3, 8, 8))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_amp_auto_without_the_private_torch_checks_is_float32(monkeypatch):
    """``torch.cpu._is_*_supported`` are private: a torch without them must mean float32, not a crash."""
    from bridgeseg.engine.train import resolve_amp

    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert resolve_amp("auto", torch.device("cpu")) == "off"


def test_a_run_with_amp_auto_trains_in_the_resolved_precision(synthetic_root, tmp_path, monkeypatch, capsys):
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.engine.train import setup

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    settings = [f"data.root={synthetic_root}", "data.crop_size=48", "train.batch_size=2", "train.iterations=2",
                "train.time_limit_minutes=0", "train.amp=auto"]
    run = setup(load_config(resolve_config_path("demo"), settings), tmp_path / "run", resume=False)
    assert run.amp == "off" and not run.scaler.is_enabled()
    assert "train.amp=auto: float32" in capsys.readouterr().out
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    run = setup(load_config(resolve_config_path("demo"), settings), tmp_path / "run2", resume=False)
    assert run.amp == "bf16" and not run.scaler.is_enabled()
    assert "bfloat16 autocast" in capsys.readouterr().out

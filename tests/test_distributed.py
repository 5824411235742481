"""Distributed training on CPU (2 gloo processes): gradient and metric parity with one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bridgeseg.config import Config, InstanceConfig, LossConfig, ModelConfig
from bridgeseg.data.loading import build_dataset, evaluation_loader
from bridgeseg.engine.evaluate import evaluate_model
from bridgeseg.losses import SegmentationLoss
from bridgeseg.models.build import build_model
from bridgeseg.predictor import Predictor

MODEL = ModelConfig(arch="joint", depth=18, output_stride=16, kernel=3, dilation=1, init="random", freeze_bn=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_model(num_classes: int = 4):
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes)
    for module in model.modules():  # frozen BN: the same function whatever the batch split
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    return model


def global_batch(num_classes: int = 4):
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 40, 40, generator=generator)
    semantic = torch.randint(0, num_classes, (4, 40, 40), generator=generator)
    instance = torch.zeros_like(semantic)
    instance[:, 5:20, 5:20], instance[:, 22:38, 10:30] = 1, 2
    semantic[:, 5:20, 5:20], semantic[:, 22:38, 10:30] = 1, 3
    semantic[:, :2] = 255
    return images, {"semantic": semantic, "instance": instance}


def gradients(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def loss_for(model, images, targets):
    criterion = SegmentationLoss(LossConfig(min_kept=200, box_min_kept=50), 4, MODEL.output_stride)
    loss, _ = criterion(model(images), targets, step=1000)
    return loss


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model = make_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    images, targets = global_batch()
    share = slice(rank * 2, rank * 2 + 2)
    loss_for(ddp, images[share], {k: v[share] for k, v in targets.items()}).backward()
    if rank == 0:
        torch.save(gradients(model), out)
    dist.destroy_process_group()


def test_one_ddp_step_equals_one_process_on_the_global_batch(tmp_path):
    out = tmp_path / "ddp_grads.pt"
    mp.spawn(_ddp_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    model = make_model()
    images, targets = global_batch()
    loss_for(model, images, targets).backward()
    single = gradients(model)
    distributed = torch.load(out)
    assert single.keys() == distributed.keys() and len(single) > 10
    for name in single:
        torch.testing.assert_close(distributed[name], single[name], rtol=1e-4, atol=1e-6, msg=name)


def _eval_worker(rank: int, world: int, port: int, root: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = _evaluate(root, shard=(rank, world))
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _evaluate(root: str, shard=(0, 1)) -> dict:
    config = Config().replace(**{"data.root": root, "data.workers": 0})
    dataset = build_dataset(config.data, "val", with_instances=True)
    model = make_model(dataset.num_classes).eval()
    loader = evaluation_loader(config.data, dataset, workers=0, shard=shard)
    predictor = Predictor(model, dataset.class_names, config, "cpu")
    return evaluate_model(predictor, loader, dataset.class_names, InstanceConfig(), progress=False,
                          thing_classes=dataset.thing_classes)  # with PQ: its statistics are summed too


def test_distributed_evaluation_equals_one_process(tmp_path, synthetic_root):
    out = tmp_path / "ddp_metrics.pt"
    mp.spawn(_eval_worker, args=(2, free_port(), str(synthetic_root), str(out)), nprocs=2, join=True)
    assert torch.load(out, weights_only=False) == _evaluate(str(synthetic_root))


def test_torchrun_training_end_to_end(tmp_path, synthetic_root):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "bridgeseg"]
    out = tmp_path / "run"
    result = subprocess.run(torchrun + ["train", "demo", "--data-root", str(synthetic_root), "--out", str(out), "--set",
                                        "model.depth=18", "model.output_stride=16", "model.init=random",
                                        "data.crop_size=40", "data.workers=0", "train.batch_size=2",
                                        "train.iterations=2", "train.threads=1", "loss.min_kept=64",
                                        "loss.box_min_kept=16"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "final.pt").is_file() and (out / "metrics.jsonl").is_file()
    assert result.stdout.count("finished 2 steps") == 1  # only rank 0 reports

"""The command line end to end on tiny data: train (2 steps), resume, evaluate, oracles, score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bridgeseg.cli import main
from bridgeseg.data.io import read_label, write_label

TINY = ["model.depth=18", "model.output_stride=16", "model.kernel=3", "model.dilation=1", "model.init=random",
        "data.crop_size=48", "data.workers=0", "train.batch_size=2", "train.iterations=2", "train.eval_every=0",
        "train.log_every=1", "train.checkpoint_every=1", "train.threads=2", "loss.min_kept=64", "loss.box_min_kept=64"]


def run(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.mark.parametrize("arch", ["semantic", "joint"])
def test_train_then_evaluate_through_the_cli(tmp_path, synthetic_root, arch, capsys):
    out = tmp_path / "run"
    assert run("train", "demo", "--data-root", synthetic_root, "--out", out, "--set", *TINY, f"model.arch={arch}") == 0
    for name in ("config.yaml", "last.pt", "final.pt", "metrics.jsonl", "curves.png"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    final = records[-1]["eval"]
    assert final["semantic"]["num_images"] == 4
    assert ("instance" in final) == (arch == "joint")
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and "finished 2 steps" in printed

    metrics_file = tmp_path / "metrics.json"
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", out / "final.pt",
               "--json", metrics_file, "--set", "data.workers=0") == 0
    results = json.loads(metrics_file.read_text())
    assert set(results["semantic"]) >= {"pixel_accuracy", "mean_accuracy", "mean_iou", "per_class_iou", "num_images"}
    # evaluate and the end-of-training evaluation agree exactly (same weights, same images)
    assert results["semantic"]["mean_iou"] == pytest.approx(final["semantic"]["mean_iou"])
    if arch == "joint":
        assert set(results["instance"]) >= {"mAP_r@0.5", "mAP_r@0.7", "mAP_r_vol", "per_class", "num_images",
                                            "protocol"}


def test_training_resumes_from_its_last_checkpoint(tmp_path, synthetic_root, capsys):
    out = tmp_path / "run"
    assert run("train", "demo", "--data-root", synthetic_root, "--out", out, "--set", *TINY,
               "model.arch=semantic") == 0
    assert run("train", "demo", "--data-root", synthetic_root, "--out", out, "--set", *TINY, "model.arch=semantic",
               "train.iterations=3") == 0
    assert "resuming from" in capsys.readouterr().out
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3]


def test_oracle_both_gives_back_the_ground_truth_instances(tmp_path, synthetic_root):
    metrics_file = tmp_path / "oracle.json"
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--oracle", "both", "--json", metrics_file,
               "--set", "data.workers=0") == 0
    results = json.loads(metrics_file.read_text())
    assert results["semantic"]["mean_iou"] == pytest.approx(1.0)
    assert results["instance"]["mAP_r@0.5"] >= 0.95


def test_config_errors_are_reported_not_raised(tmp_path, synthetic_root, capsys):
    assert run("train", "demo", "--data-root", synthetic_root, "--out", tmp_path, "--set", "model.depth=19") == 2
    assert "model.depth = 19 is not valid" in capsys.readouterr().err
    assert run("evaluate", "demo", "--data-root", synthetic_root) == 2
    assert "--checkpoint" in capsys.readouterr().err
    assert run("train", "demo", "--data-root", tmp_path / "missing", "--out", tmp_path) == 2
    assert "does not exist" in capsys.readouterr().err


def write_pair(folder, name, label):
    write_label(folder / f"{name}.png", np.asarray(label))


def test_score_semantic(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, (2, 6, 7))
    guess = truth.copy()
    guess[0, 0, :] = (guess[0, 0, :] + 1) % 3
    for i in range(2):
        write_pair(gt, f"im{i}", truth[i])
        write_pair(pred, f"im{i}", guess[i])
    out = tmp_path / "score.json"
    assert run("score", "semantic", "--gt", gt, "--pred", pred, "--num-classes", 3, "--json", out) == 0
    scores = json.loads(out.read_text())
    assert scores["pixel_accuracy"] == pytest.approx(1 - 7 / 84)
    assert scores["num_images"] == 2

    (pred / "im1.png").unlink()
    assert run("score", "semantic", "--gt", gt, "--pred", pred, "--num-classes", 3) == 2
    assert "im1.png" in capsys.readouterr().err
    write_pair(pred, "im1", np.full((6, 7), 5))
    assert run("score", "semantic", "--gt", gt, "--pred", pred, "--num-classes", 3) == 2
    assert "5" in capsys.readouterr().err
    write_pair(pred, "im1", np.zeros((5, 7)))
    assert run("score", "semantic", "--gt", gt, "--pred", pred, "--num-classes", 3) == 2
    assert "im1.png" in capsys.readouterr().err
    assert read_label(gt / "im0.png").shape == (6, 7)

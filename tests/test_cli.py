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


@pytest.fixture(scope="module")
def joint_checkpoint(tmp_path_factory, synthetic_root):
    """A joint model trained for 2 steps through the CLI (weights are near random: the tests below
    check that every path gives the same numbers, not that they are good)."""
    out = tmp_path_factory.mktemp("joint-run")
    assert run("train", "demo", "--data-root", synthetic_root, "--out", out, "--set", *TINY, "model.arch=joint") == 0
    assert (out / "class_scores.png").is_file()
    return out / "final.pt"


def test_predict_dataset_files_score_like_evaluate(tmp_path, synthetic_root, joint_checkpoint):
    """evaluate in memory == predict-dataset to VOC files, then score semantic / score instance."""
    direct = tmp_path / "direct.json"
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", joint_checkpoint,
               "--json", direct, "--set", "data.workers=0") == 0
    predictions = tmp_path / "pred"
    assert run("predict-dataset", "demo", "--data-root", synthetic_root, "--checkpoint", joint_checkpoint,
               "--out", predictions, "--format", "voc", "--set", "data.workers=0") == 0
    split = synthetic_root / "ImageSets" / "Segmentation" / "val.txt"
    semantic, instance = tmp_path / "semantic.json", tmp_path / "instance.json"
    assert run("score", "semantic", "--gt", synthetic_root / "SegmentationClass", "--pred", predictions,
               "--split", split, "--json", semantic) == 0
    assert run("score", "instance", "--gt", synthetic_root, "--gt-format", "voc", "--pred", predictions / "instances",
               "--split", split, "--json", instance) == 0
    expected = json.loads(direct.read_text())
    assert json.loads(semantic.read_text())["mean_iou"] == pytest.approx(expected["semantic"]["mean_iou"])
    from_files = json.loads(instance.read_text())
    for key in ("mAP_r@0.5", "mAP_r@0.7", "mAP_r_vol"):
        assert from_files[key] == pytest.approx(expected["instance"][key], abs=1e-6), key
    assert_panoptic_files_score_like_evaluate(tmp_path, synthetic_root, joint_checkpoint, expected["panoptic"])


def assert_panoptic_files_score_like_evaluate(tmp_path, synthetic_root, checkpoint, expected):
    """predict-dataset --format coco-panoptic, then score panoptic against the ground truth in the same
    format, gives evaluate's PQ; --format cityscapes-panoptic is refused for a VOC-layout dataset."""
    from bridgeseg.data.voc import VOCSegmentation
    from bridgeseg.outputs import PanopticFiles, panoptic_categories
    from bridgeseg.panoptic import panoptic_from_labels

    predictions = tmp_path / "panoptic"
    assert run("predict-dataset", "demo", "--data-root", synthetic_root, "--checkpoint", checkpoint,
               "--out", predictions, "--format", "coco-panoptic", "--set", "data.workers=0") == 0
    dataset = VOCSegmentation(synthetic_root, "val", with_instances=True)
    ids = range(dataset.num_classes)
    truth = PanopticFiles(tmp_path, "gt", panoptic_categories(dataset.class_names, dataset.thing_classes, ids), ids)
    for index, name in enumerate(dataset.ids):
        sample = dataset[index]
        truth.add(name, f"{name}.png", panoptic_from_labels(sample["semantic"], sample["instance"],
                                                             dataset.thing_classes, dataset.num_classes))
    scores = tmp_path / "scores.json"
    assert run("score", "panoptic", "--gt", truth.write(), "--pred", predictions / "panoptic_val.json",
               "--json", scores) == 0
    from_files = json.loads(scores.read_text())
    for part in ("all", "things", "stuff"):
        assert from_files[part] == pytest.approx(expected[part], abs=1e-9), part
    assert from_files["per_class"].keys() == expected["per_class"].keys()
    assert run("predict-dataset", "demo", "--data-root", synthetic_root, "--checkpoint", checkpoint,
               "--out", predictions, "--format", "cityscapes-panoptic", "--set", "data.workers=0") == 2


def test_evaluate_with_views_and_a_report(tmp_path, synthetic_root, joint_checkpoint, capsys):
    report = tmp_path / "report"
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", joint_checkpoint,
               "--scales", "0.75", "1", "--flip", "--tile-size", "32", "--report", report,
               "--set", "data.workers=0") == 0
    assert (report / "class_scores.png").stat().st_size > 1000
    assert "mean IoU" in (report / "report.md").read_text()
    assert json.loads((report / "metrics.json").read_text())["semantic"]["num_images"] == 4
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", joint_checkpoint,
               "--scales", "0", "--set", "data.workers=0") == 2
    assert "eval.scales" in capsys.readouterr().err


def test_predict_writes_files_and_counts_failures(tmp_path, synthetic_root, joint_checkpoint, capsys):
    images = sorted((synthetic_root / "JPEGImages").glob("*.jpg"))[:2]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert run("predict", "--checkpoint", joint_checkpoint, *images, broken, "--out", out, "--device", "cpu") == 0
    printed = capsys.readouterr()
    assert "2 images predicted, 1 failed" in printed.out and "broken.jpg" in printed.err
    for image in images:
        for suffix in ("_semantic.png", "_instances.png", ".json", "_overlay.png"):
            assert (out / f"{image.stem}{suffix}").is_file()
    assert run("predict", "--checkpoint", joint_checkpoint, broken, "--out", out) == 1
    assert run("predict", "--checkpoint", joint_checkpoint, tmp_path / "nothing-*.png", "--out", out) == 2
    assert "nothing-*.png" in capsys.readouterr().err


def test_export_checks_onnx_against_pytorch(tmp_path, joint_checkpoint, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnx onnxruntime)")
    assert run("export", "--checkpoint", joint_checkpoint, "--onnx", tmp_path / "model.onnx",
               "--height", 64, "--width", 64) == 0
    assert "largest absolute difference" in capsys.readouterr().out
    assert (tmp_path / "model.onnx").stat().st_size > 100_000


def test_data_check_exit_status(tmp_path, synthetic_root, capsys):
    assert run("data", "check", "--dataset", "voc", "--root", synthetic_root) == 0
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(synthetic_root, copy)
    victim = sorted((copy / "SegmentationClass").glob("*.png"))[0]
    victim.write_bytes(b"truncated")
    assert run("data", "check", "--dataset", "voc", "--root", copy) == 1
    assert victim.name in capsys.readouterr().out


def test_demo_through_the_cli_writes_everything_and_says_when_it_ran_short(tmp_path, capsys):
    """A few seconds of `bridgeseg demo` on a tiny generated set: every output is written, the
    printed table and metrics.json agree, and a run far short of the README's step count says so."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "0.05", "--train-images", "16", "--val-images", "3"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["semantic"]["num_images"] == 3 and metrics["instance"]["num_images"] == 3
    for name in ("report.html", "report.md", "overlays.png", "class_scores.png", "run/curves.png", "run/final.pt",
                 "data/synthetic.json"):
        assert (out / name).is_file(), name
    assert f"{100 * metrics['semantic']['mean_iou']:.1f}" in printed
    assert metrics["panoptic"]["num_images"] == 3 and "PQ" in printed and str(out / "report.html") in printed
    assert "bridgeseg demo --minutes" in printed  # the slow-machine note


def test_slow_machine_hint():
    from bridgeseg.demo import REFERENCE_STEPS_PER_MINUTE, slow_machine_hint

    reference = 8 * REFERENCE_STEPS_PER_MINUTE
    assert slow_machine_hint(reference, 8.0) is None
    assert slow_machine_hint(int(0.85 * reference), 8.0) is None
    hint = slow_machine_hint(reference // 2, 8.0)  # half as fast: twice the minutes
    assert "--minutes 16`" in hint


def test_a_bad_grouping_value_stops_train_before_any_work(tmp_path, synthetic_root, capsys):
    out = tmp_path / "run"
    assert run("train", "demo", "--data-root", synthetic_root, "--out", out, "--set", *TINY,
               "instance.nms_threshold=1.0") == 2
    assert "instance.nms_threshold = 1.0 is out of range: it must be < 1.0" in capsys.readouterr().err
    assert not out.exists()  # refused when the config loaded: no run folder, no training


def test_predict_takes_test_time_overrides_only(tmp_path, synthetic_root, joint_checkpoint, capsys):
    image = sorted((synthetic_root / "JPEGImages").glob("val_*.jpg"))[0]
    assert run("predict", "--checkpoint", joint_checkpoint, image, "--out", tmp_path / "a", "--device", "cpu",
               "--set", "instance.top_n=2", "instance.min_score=0.2", "eval.scales=[1.0, 0.5]") == 0
    assert (tmp_path / "a" / f"{image.stem}.json").is_file()
    assert run("predict", "--checkpoint", joint_checkpoint, image, "--out", tmp_path / "b",
               "--set", "model.depth=50") == 2
    assert "model.depth cannot be changed at prediction time" in capsys.readouterr().err
    assert run("predict", "--checkpoint", joint_checkpoint, image, "--out", tmp_path / "b",
               "--set", "instance.top_n=0") == 2
    assert "instance.top_n = 0 is out of range" in capsys.readouterr().err


def test_evaluate_and_predict_find_the_same_instances(synthetic_root, joint_checkpoint, monkeypatch):
    """The instances evaluate scores are exactly those that predict returns for the same image and
    settings: both run the Predictor's maps and find_instances."""
    import torch

    import bridgeseg.engine.evaluate as evaluate_module
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.data.loading import build_dataset
    from bridgeseg.predictor import Predictor

    settings = ["data.workers=0", "instance.top_n=2", "instance.min_score=0.1", "eval.scales=[1.0, 0.75]",
                "eval.flip=true"]
    config = load_config(resolve_config_path("demo"), [f"data.root={synthetic_root}", *settings])
    found = []
    original = evaluate_module.find_instances

    def recording(maps, image_size, instance_config, thing_classes=None):
        found.append(original(maps, image_size, instance_config, thing_classes))
        return found[-1]

    monkeypatch.setattr(evaluate_module, "find_instances", recording)
    evaluate_module.evaluate_config(config, joint_checkpoint, device="cpu", progress=False)
    predictor = Predictor.from_checkpoint(joint_checkpoint, device="cpu", eval_config=config.eval,
                                          instance_config=config.instance)
    dataset = build_dataset(config.data, config.evaluation_split)
    assert len(found) == len(dataset) == 4 and sum(len(instances) for instances in found) > 0
    for name, in_evaluate in zip(dataset.ids, found):
        predicted = predictor(dataset.image_path(name)).instances
        assert torch.equal(predicted.masks, in_evaluate.masks) and torch.equal(predicted.labels, in_evaluate.labels)
        assert torch.equal(predicted.scores, in_evaluate.scores) and torch.equal(predicted.boxes, in_evaluate.boxes)


def test_networks_trained_apart_combine_at_test_time(tmp_path, synthetic_root, capsys):
    """The paper trains the semantic and the localization network separately: two runs, two
    checkpoints, combined by evaluate / predict."""
    import torch

    from bridgeseg.models.build import load_trained_model, load_trained_models

    runs = {}
    for arch in ("semantic", "localization"):
        runs[arch] = tmp_path / arch
        assert run("train", "demo", "--data-root", synthetic_root, "--out", runs[arch], "--set", *TINY,
                   f"model.arch={arch}") == 0
    records = [json.loads(line) for line in (runs["localization"] / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["eval"]["oracle"] == "semantic" and "instance" in records[-1]["eval"]
    checkpoints = [runs["semantic"] / "final.pt", runs["localization"] / "final.pt"]
    trained = load_trained_models(checkpoints[::-1])  # either order
    combined, config = trained.model, trained.config
    assert config.model.arch == "separate" and set(combined.heads) == {"semantic", "localization"}
    image = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        outputs = combined(image)
        for arch, path in zip(("semantic", "localization"), checkpoints):
            alone = load_trained_model(path).model(image)[arch]
            assert torch.equal(outputs[arch], alone)
    both = ["--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1]]
    metrics = tmp_path / "combined.json"
    assert run("evaluate", "demo", "--data-root", synthetic_root, *both, "--json", metrics,
               "--set", "data.workers=0") == 0
    assert set(json.loads(metrics.read_text())) == {"semantic", "instance", "panoptic"}
    image_path = sorted((synthetic_root / "JPEGImages").glob("val_*.jpg"))[0]
    assert run("predict", *both, image_path, "--out", tmp_path / "pred") == 0
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", checkpoints[0],
               "--checkpoint", checkpoints[0]) == 2
    assert "cannot be combined: both produce ['semantic']" in capsys.readouterr().err


def test_evaluate_reports_pq_and_writes_report_html(tmp_path, synthetic_root, joint_checkpoint, capsys):
    """evaluate prints PQ beside mean IoU and mAP^r; --report writes report.html with a row and a thumbnail
    per image, and the training curves of the checkpoint's run."""
    report = tmp_path / "report"
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", joint_checkpoint,
               "--report", report, "--set", "data.workers=0") == 0
    printed = capsys.readouterr().out
    assert "PQ" in printed and "mean IoU" in printed and "mAP^r@0.5" in printed
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == {"semantic", "instance", "panoptic"} and metrics["panoptic"]["num_images"] == 4
    page = (report / "report.html").read_text()
    assert page.count('"thumb": "thumbs/') == 4 and len(list((report / "thumbs").glob("*.jpg"))) == 4
    assert "training curves" in page and (report / "curves.png").is_file()

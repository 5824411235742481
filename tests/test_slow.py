"""Slow tests (``make test-slow``; CI leaves them out): the demo recipe must learn."""

from __future__ import annotations

import json

import pytest

from bridgeseg.config import load_config, resolve_config_path
from bridgeseg.demo import VAL_IMAGES, run_demo
from bridgeseg.engine.evaluate import evaluate_config

pytestmark = pytest.mark.slow


def test_demo_recipe_learns_in_four_minutes(tmp_path):
    """Four minutes of the demo on a CPU: far above chance on classes and instances, every output written.

    Chance level: background everywhere gives a mean IoU of about 0.15 and no instance. Measured on
    two cores, on the 300 validation scenes, with the shipped recipe (backbone at 16, maps at 4,
    lr 0.003 after a 300-step warm-up): 1,164 steps, mean IoU 0.52 (circle 0.64, square 0.51,
    triangle 0.47, cross 0.51, star 0.01), mAP^r@0.5 0.41, PQ of the things 0.33; 0.84 mean IoU
    after the demo's 8 minutes. The previous recipe's five runs after 4 minutes spread over 0.31 to
    0.40 mean IoU, and which shapes pass 0.2 after about a thousand steps varied from run to run, so
    the bars sit well below the measured run.
    """
    metrics = run_demo(tmp_path, minutes=4.0, progress=False)
    assert metrics["semantic"]["mean_iou"] > 0.33  # well above chance (0.15)
    assert sum(value > 0.2 for value in metrics["semantic"]["per_class_iou"][1:]) >= 3  # shapes, not just background
    assert metrics["instance"]["mAP_r@0.5"] > 0.18
    assert "instance" in metrics and metrics["instance"]["num_images"] == VAL_IMAGES
    # PQ of the things (0.33 measured; 153 steps of an older recipe on a shared machine gave 0.011)
    assert metrics["panoptic"]["things"]["pq"] > 0.14 and metrics["panoptic"]["num_images"] == VAL_IMAGES
    for name in ("report.html", "report.md", "overlays.png", "class_scores.png", "metrics.json", "run/curves.png",
                 "run/final.pt"):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics

    # the paper's pilot experiment on this trained checkpoint: ground-truth class maps in place of
    # the network's (clusters still ranked by the network's own class probabilities) raise mAP^r
    config = load_config(resolve_config_path("demo"), [f"data.root={tmp_path / 'data'}", "eval.max_images=100"])
    own, _ = evaluate_config(config, tmp_path / "run" / "final.pt", progress=False)
    oracle, _ = evaluate_config(config, tmp_path / "run" / "final.pt", oracle="semantic", progress=False)
    assert oracle["semantic"]["mean_iou"] > 0.99
    assert oracle["instance"]["mAP_r@0.5"] > own["instance"]["mAP_r@0.5"] + 0.05
    assert oracle["instance"]["mAP_r@0.7"] > own["instance"]["mAP_r@0.7"]

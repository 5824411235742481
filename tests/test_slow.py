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
    two cores, on the 300 validation scenes, with the shipped recipe (maps at stride 4), five runs
    after 4 minutes: 1,077 / 1,034 / 1,127 / 994 / 1,062 steps, mean IoU 0.40 / 0.35 / 0.39 / 0.31 /
    0.36 (circle 0.52 to 0.55; square 0.29 / 0.22 / 0.18 / 0.08 / 0.22, triangle 0.31 to 0.35, cross
    0.28 / 0.06 / 0.31 / 0.01 / 0.09, star 0 in all), mAP^r@0.5 0.22 / 0.19 / 0.23 / 0.17 / 0.18, PQ
    of the things 0.20 / 0.19 / - / 0.16 / 0.19; 0.71 and 0.68 mean IoU after the demo's 8. Which
    shapes pass 0.2 after 1,000 steps varies from run to run (the fourth had only circles and
    triangles), so the bars sit below the worst of the five runs. (Heads at stride 8, without
    colour jitter, copy-paste and repeat factor sampling, gave 0.46 and 0.29 after 4: the demo's own
    large shapes are learnt faster there, the scenes of README "On data it has never seen" slower.)
    """
    metrics = run_demo(tmp_path, minutes=4.0, progress=False)
    assert metrics["semantic"]["mean_iou"] > 0.25  # well above chance (0.15)
    assert sum(value > 0.2 for value in metrics["semantic"]["per_class_iou"][1:]) >= 2  # shapes, not just background
    assert metrics["instance"]["mAP_r@0.5"] > 0.1
    assert "instance" in metrics and metrics["instance"]["num_images"] == VAL_IMAGES
    # PQ of the things (0.16-0.20 measured; 153 steps on a shared machine gave 0.011, background alone 0.77)
    assert metrics["panoptic"]["things"]["pq"] > 0.08 and metrics["panoptic"]["num_images"] == VAL_IMAGES
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

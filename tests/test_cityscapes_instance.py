"""The official Cityscapes AP rules on hand-made frames (the slow test compares with cityscapesscripts itself)."""

from __future__ import annotations

import numpy as np
import pytest

from bridgeseg.cli import main
from bridgeseg.evaluation.cityscapes_instance import CityscapesInstanceEvaluator, cityscapes_average_precision
from bridgeseg.outputs import write_instance_txt

from conftest import shared_fixture

CAR, PERSON = 26, 24


def frame() -> np.ndarray:
    """A 60 x 80 raw instanceIds map: road (7), two cars (26001 large, 26002 of 64 pixels), a car group
    region (26), ego vehicle (1, void) along the bottom."""
    raw = np.full((60, 80), 7, np.int64)
    raw[10:30, 10:30] = 26001  # 400 px
    raw[40:48, 60:68] = 26002  # 64 px: too small to be evaluated
    raw[5:25, 50:70] = 26  # group
    raw[52:] = 1
    return raw


def box(top, left, height, width, shape=(60, 80)):
    mask = np.zeros(shape, bool)
    mask[top:top + height, left:left + width] = True
    return mask


def evaluate(masks, label_ids, scores) -> tuple[dict, np.ndarray]:
    evaluator = CityscapesInstanceEvaluator()
    evaluator.process(np.stack(masks), label_ids, scores, frame())
    return evaluator.evaluate(), evaluator.ap_matrix()


def test_a_perfect_prediction_scores_one_and_small_instances_do_not_count():
    result, matrix = evaluate([box(10, 10, 20, 20)], [CAR], [0.9])
    assert result["per_class"]["car"] == {"AP": 1.0, "AP50": 1.0} and result["AP"] == 1.0
    assert result["per_class"]["person"] is None  # no person: left out of the means
    # a prediction of the small car is neither right nor wrong
    assert evaluate([box(10, 10, 20, 20), box(40, 60, 8, 8)], [CAR, CAR], [0.9, 0.95])[0]["AP"] == 1.0


def test_predictions_on_void_or_a_group_region_are_not_false_positives():
    on_void = box(52, 0, 8, 20)  # all on the ego vehicle
    on_group = box(5, 50, 20, 20)
    result, _ = evaluate([box(10, 10, 20, 20), on_void, on_group], [CAR, CAR, CAR], [0.5, 0.9, 0.9])
    assert result["AP"] == 1.0
    # 60 % on void: ignored while the share exceeds the threshold (0.50, 0.55), a false positive above
    _, matrix = evaluate([box(10, 10, 20, 20), box(48, 30, 10, 10)], [CAR, CAR], [0.5, 0.9])
    car = matrix[2]
    assert (car[:2] == 1.0).all() and (car[2:] < 1.0).all()


def test_duplicates_and_shifts_follow_the_thresholds():
    shifted = box(10, 14, 20, 20)  # IoU 320 / 480 = 0.667
    _, matrix = evaluate([shifted], [CAR], [0.8])
    assert (matrix[2][:4] == 1.0).all() and (matrix[2][4:] == 0.0).all()  # found at 0.50 .. 0.65
    # with the exact box too: up to 0.65 the better-scored one is the match and the other a false positive
    # ranked below it (AP 1); above, the shifted one is a false positive ranked first (AP 0.25)
    _, matrix = evaluate([box(10, 10, 20, 20), shifted], [CAR, CAR], [0.6, 0.8])
    assert matrix[2][:4] == pytest.approx(1.0) and matrix[2][4:] == pytest.approx(0.25)
    wrong_class, _ = evaluate([box(10, 10, 20, 20)], [PERSON], [0.9])
    assert wrong_class["per_class"]["car"]["AP"] == 0.0 and wrong_class["per_class"]["person"] is None


def test_statistics_of_two_ranks_merge_into_those_of_one():
    images = [([box(10, 10, 20, 20), box(10, 14, 20, 20)], [CAR, CAR], [0.6, 0.8]),
              ([box(10, 12, 20, 20), box(48, 30, 10, 10)], [CAR, CAR], [0.7, 0.9])]
    alone, first, second = CityscapesInstanceEvaluator(), CityscapesInstanceEvaluator(), CityscapesInstanceEvaluator()
    for evaluator, part in ((first, images[:1]), (second, images[1:]), (alone, images)):
        for masks, label_ids, scores in part:
            evaluator.process(np.stack(masks), label_ids, scores, frame())
    first.merge(second.state_dict())
    assert first.evaluate() == alone.evaluate() and 0 < alone.evaluate()["AP"] < 1


def test_average_precision_by_hand():
    # two true (0.9, 0.6), one false (0.8), one miss: points (p, r) = (2/3, 2/3) at >= 0.6, (1/2, 1/3) at
    # >= 0.8, (1, 1/3) at >= 0.9, then (1, 0); widths (r_prev - r_next) / 2
    recall = [2 / 3, 1 / 3, 1 / 3, 0.0]
    precision = [2 / 3, 1 / 2, 1.0, 1.0]
    widths = [(recall[0] - recall[1]) / 2, (recall[0] - recall[2]) / 2, (recall[1] - recall[3]) / 2,
              (recall[2] - 0) / 2]
    expected = sum(p * w for p, w in zip(precision, widths))
    assert cityscapes_average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.6]), 1) == \
        pytest.approx(expected)
    assert cityscapes_average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0


def test_score_instance_cityscapes_protocol_on_the_real_small_frame(tmp_path, capsys):
    """The ground truth written back as predictions scores 1 with --protocol cityscapes; the protocol is
    refused for other ground-truth formats."""
    root = shared_fixture("cityscapes_small")
    gt_file = next(root.glob("gtFine/val/*/*_gtFine_instanceIds.png"))
    from bridgeseg.data.cityscapes import read_instance_ids

    raw = read_instance_ids(gt_file)
    values = [v for v in np.unique(raw) if v >= 1000]
    stem = gt_file.name.removesuffix("_gtFine_instanceIds.png")
    write_instance_txt(tmp_path / f"{stem}.txt", np.stack([raw == v for v in values]), [v // 1000 for v in values],
                       [1.0] * len(values))
    out = tmp_path / "scores.json"
    assert main(["score", "instance", "--gt", str(root / "gtFine"), "--gt-format", "cityscapes", "--pred",
                 str(tmp_path), "--protocol", "cityscapes", "--json", str(out)]) == 0
    assert "AP (CS)" in capsys.readouterr().out
    import json

    assert json.loads(out.read_text())["AP"] == 1.0
    assert main(["score", "instance", "--gt", str(root), "--gt-format", "voc", "--pred", str(tmp_path),
                 "--protocol", "cityscapes"]) == 2


def test_evaluate_on_cityscapes_reports_the_official_ap_and_pq(tmp_path):
    """`evaluate --oracle both` on the real small frame: the ground-truth instances come back, so the
    official AP, mAP^r and (with every segment kept) PQ are 1. Only the 8 thing classes are grouped:
    stuff (road, sky, ...) takes none of the default 100 instance places."""
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.engine.evaluate import evaluate_config, write_reports
    from bridgeseg.html_report import Gallery

    settings = ["data.dataset=cityscapes", f"data.root={shared_fixture('cityscapes_small')}", "data.workers=0",
                "eval.panoptic_min_area=1"]
    gallery = Gallery(tmp_path)
    results, names = evaluate_config(load_config(resolve_config_path("demo"), settings), None, oracle="both",
                                     device="cpu", progress=False, gallery=gallery)
    write_reports(results, names, tmp_path, gallery.rows, "oracle")
    assert results["cityscapes"]["AP"] == 1.0 and results["cityscapes"]["per_class"]["car"]["AP50"] == 1.0
    assert results["instance"]["mAP_r@0.5"] == 1.0
    assert results["panoptic"]["all"]["pq"] == 1.0 and results["panoptic"]["things"]["n"] == 2
    assert (tmp_path / "report.html").is_file()

"""Panoptic maps and PQ: the rules on hand-made images, files round trip, and torchmetrics' PanopticQuality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bridgeseg.evaluation.panoptic as panoptic_metrics
from bridgeseg.data.voc import read_class_names, read_thing_classes
from bridgeseg.evaluation.panoptic import PanopticEvaluator, image_statistics, score_panoptic_files
from bridgeseg.outputs import PanopticFiles, panoptic_categories
from bridgeseg.panoptic import (Panoptic, ids_to_rgb, panoptic_from_labels, panoptic_from_prediction, rgb_to_ids,
                                segment_boxes)

THINGS = (1, 2)  # classes 0 (background) and 3 are stuff
NAMES = ("background", "car", "person", "sky")


def box(shape, top, left, height, width):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + height, left:left + width] = True
    return mask


def test_ground_truth_segments_void_and_crowd():
    semantic = np.zeros((10, 12), np.int64)
    semantic[:2] = 3
    semantic[4:8, 1:5] = 1
    semantic[4:8, 7:11] = 1
    semantic[9] = 255
    instance = np.zeros_like(semantic)
    instance[4:8, 1:5] = 1
    instance[4:8, 7:11] = 255  # a car region without instance ids: crowd
    gt = panoptic_from_labels(semantic, instance, THINGS, 4)
    assert gt.categories.tolist() == [1, 0, 3, 1] and gt.crowd.tolist() == [False, False, False, True]
    assert gt.areas().tolist() == [16, 10 * 12 - 24 - 16 - 16 - 12, 24, 16]
    assert (gt.ids[9] == 0).all()  # void


def test_prediction_rule_scores_areas_and_stuff():
    shape = (20, 20)
    semantic = np.zeros(shape, np.int64)
    semantic[:3] = 3  # sky
    semantic[15:, 15:] = 1  # "car" in the class map, no instance there: void
    masks = np.stack([box(shape, 5, 5, 6, 6), box(shape, 8, 8, 6, 6), box(shape, 6, 6, 5, 5), box(shape, 0, 15, 2, 2),
                      box(shape, 16, 0, 3, 3)])
    labels, scores = np.array([1, 2, 1, 1, 3]), np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    pred = panoptic_from_prediction(semantic, masks, labels, scores, THINGS, 4, min_area=5)
    # first box whole; second loses 9 of 36 pixels (kept); third lies inside the first (dropped: less than half
    # visible); the fourth has 4 pixels (< min_area); the fifth is of a stuff class (left to the class map)
    assert pred.categories.tolist() == [1, 2, 0, 3] and pred.areas()[:2].tolist() == [36, 27]
    assert (pred.ids[15:, 15:] == 0).all() and (pred.ids[0, 15:17] == 4).all()  # sky takes the dropped box
    assert segment_boxes(pred)[0].tolist() == [5, 5, 6, 6]
    empty = panoptic_from_prediction(semantic, None, [], [], THINGS, 4)
    assert empty.categories.tolist() == [0, 3]


def test_rgb_ids_round_trip():
    ids = np.array([[0, 1, 255], [256, 65535, 70000]])
    assert np.array_equal(rgb_to_ids(ids_to_rgb(ids)), ids)


def test_quality_on_a_hand_made_image():
    """TP (void left out of the union), FN, FP, FP ignored as mostly void, FP ignored in a crowd region."""
    shape = (20, 20)
    gt_masks = [box(shape, 0, 0, 4, 4), box(shape, 10, 10, 4, 4), box(shape, 15, 0, 5, 5)]
    gt_masks.append(~np.any(gt_masks, axis=0))  # background, never predicted: one false negative
    gt = Panoptic.from_masks(shape, gt_masks, [1, 1, 2, 0], [False, False, True, False])
    gt.ids[0:4, 4:6] = 0  # void beside the first car
    pred_masks = [box(shape, 0, 0, 4, 6), box(shape, 5, 15, 3, 3), box(shape, 0, 12, 2, 2), box(shape, 15, 0, 3, 4)]
    pred = Panoptic.from_masks(shape, pred_masks, [1, 1, 2, 2])
    gt.ids[0:2, 12:14] = 0  # the third prediction lies on void
    stats = image_statistics(gt, pred, 4)
    tp, fp, fn, iou = stats
    assert tp.tolist() == [0, 1, 0, 0] and iou[1] == pytest.approx(1.0)  # the 8 void pixels are not in the union
    assert fn.tolist() == [1, 1, 0, 0]  # the second car, the background; a crowd region is never a false negative
    assert fp.tolist() == [0, 1, 0, 0]  # the car at (5, 15); the persons on void / in the crowd are ignored
    evaluator = PanopticEvaluator(NAMES, THINGS)
    evaluator.process(gt, pred)
    result = evaluator.evaluate()
    assert result["per_class"]["car"] == pytest.approx({"pq": 1 / 2, "sq": 1.0, "rq": 1 / 2})
    assert result["per_class"]["person"] is None and result["per_class"]["background"]["pq"] == 0.0
    assert result["all"]["pq"] == pytest.approx(0.25) and result["things"]["n"] == 1 and result["stuff"]["n"] == 1


def test_an_empty_prediction_misses_everything():
    shape = (8, 8)
    gt = Panoptic.from_masks(shape, [box(shape, 0, 0, 4, 4), ~box(shape, 0, 0, 4, 4)], [1, 0])
    empty = Panoptic(np.zeros(shape, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    assert image_statistics(gt, empty, 4)[2].tolist() == [1, 1, 0, 0]


def test_files_round_trip_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    evaluator = PanopticEvaluator(NAMES, THINGS)
    gt_files = PanopticFiles(tmp_path, "gt", panoptic_categories(NAMES, THINGS, [10, 11, 12, 13]), [10, 11, 12, 13])
    pred_files = PanopticFiles(tmp_path, "pred", [], [10, 11, 12, 13])
    for index in range(3):
        gt, pred = random_scene(rng)
        evaluator.process(gt, pred)
        gt_files.add(f"image{index}", f"image{index}.png", gt)
        pred_files.add(f"image{index}", f"image{index}_pred.png", pred)
    gt_json, pred_json = gt_files.write(), pred_files.write()
    from_files = score_panoptic_files(gt_json, pred_json)
    assert from_files.pop("category_ids") == {"background": 10, "car": 11, "person": 12, "sky": 13}
    expected = evaluator.evaluate()
    for part in ("all", "things", "stuff"):
        assert from_files[part] == pytest.approx(expected[part])
    pred_files.annotations.pop()
    pred_files.write()
    with pytest.raises(ValueError, match="image2"):
        score_panoptic_files(gt_json, pred_json)


def test_classes_txt_marks_stuff(tmp_path):
    (tmp_path / "classes.txt").write_text("background\nroad [stuff]\ncar\nsky [stuff]\n")
    assert read_class_names(tmp_path) == ("background", "road", "car", "sky")
    assert read_thing_classes(tmp_path) == (2,)
    assert read_thing_classes(tmp_path / "elsewhere") == tuple(range(1, 21))


# --------------------------------------------------------------------------------------------------
# torchmetrics' PanopticQuality, an independent implementation

def random_scene(rng: np.random.Generator, size: int = 48, void: bool = True, empty: bool = False):
    """A ground truth with stuff, things and (optionally) void, and a prediction with shifted, missed,
    extra and wrong-class segments and no void pixel (torchmetrics treats predicted void differently)."""
    semantic = np.where(np.arange(size)[:, None] < size // 3, 3, 0).repeat(size, axis=1)
    instance = np.zeros((size, size), np.int64)
    pred_masks, labels, scores = [], [], []
    for k in range(int(rng.integers(2, 6))):
        top, left = (int(v) for v in rng.integers(size // 3, size - 10, 2))
        height, width = (int(v) for v in rng.integers(4, 10, 2))
        label = int(rng.choice(THINGS))
        semantic[top:top + height, left:left + width] = label
        instance[top:top + height, left:left + width] = k + 1
        fate = rng.random()
        if fate < 0.15:
            continue  # missed
        dy, dx = (int(v) for v in rng.integers(-3, 4, 2))
        mask = np.roll(np.roll(instance == k + 1, dy, axis=0), dx, axis=1)
        pred_masks.append(mask)
        labels.append(label if fate < 0.85 else 3 - label)  # some of the wrong class
        scores.append(float(rng.random()))
    if void:
        semantic[rng.random((size, size)) < 0.05] = 255
        semantic[:, :2] = 255
        instance[semantic == 255] = 255
    gt = panoptic_from_labels(semantic, instance, THINGS, 4)
    pred_semantic = np.where(semantic == 255, 0, semantic)
    pred_semantic[size // 3 - 2:size // 3 + 1] = 3  # the sky's edge moved
    pred_semantic[np.isin(pred_semantic, THINGS)] = 0  # thing pixels come from the instances, the rest background
    extra = np.zeros((size, size), bool)
    extra[2:6, size - 8:size - 2] = True  # an unmatched segment
    masks, labels, scores = np.stack(pred_masks + [extra]), labels + [1], scores + [0.01]
    if empty:  # no instance found at all
        masks, labels, scores = None, [], []
    pred = panoptic_from_prediction(pred_semantic, masks, labels, scores, THINGS, 4, min_area=1)
    assert (pred.ids > 0).all(), "the prediction must have no void pixel"
    return gt, pred


def torchmetrics_input(panoptic: Panoptic) -> torch.Tensor:
    """(H, W, 2) (category, instance id) with void as a category that is neither thing nor stuff."""
    category = np.full(panoptic.ids.shape, 99, np.int64)
    index = panoptic.ids - 1
    category[index >= 0] = panoptic.categories[index[index >= 0]]
    return torch.from_numpy(np.stack([category, panoptic.ids], axis=-1))


def compare_with_torchmetrics(scenes) -> tuple[dict, torch.Tensor]:
    metrics = pytest.importorskip("torchmetrics.detection", reason="torchmetrics is not installed")
    theirs = metrics.PanopticQuality(things=set(THINGS), stuffs={0, 3}, return_sq_and_rq=True, return_per_class=True,
                                     allow_unknown_preds_category=True)
    evaluator = PanopticEvaluator(NAMES, THINGS)
    for gt, pred in scenes:
        evaluator.process(gt, pred)
        theirs.update(torchmetrics_input(pred)[None], torchmetrics_input(gt)[None])
    return evaluator.evaluate(), theirs.compute().double()


def scenes_with_every_case(seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [random_scene(rng, void=index % 2 == 0, empty=index == 3) for index in range(8)]


def test_pq_matches_torchmetrics():
    """Per class (in torchmetrics' order: things, then stuff) PQ, SQ, RQ agree to 1e-6 on scenes with
    void, missed, shifted, wrong-class and extra segments, and one prediction without any instance."""
    ours, theirs = compare_with_torchmetrics(scenes_with_every_case())
    order = list(THINGS) + [0, 3]
    for row, index in enumerate(order):
        mine = ours["per_class"][NAMES[index]] or {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        assert [mine["pq"], mine["sq"], mine["rq"]] == pytest.approx(theirs[row].tolist(), abs=1e-6), NAMES[index]
    assert 0.2 < ours["all"]["pq"] < 0.9  # neither trivial nor perfect


def test_a_wrong_matching_threshold_fails_the_torchmetrics_check(monkeypatch):
    monkeypatch.setattr(panoptic_metrics, "MATCH_IOU", 0.3)
    ours, theirs = compare_with_torchmetrics(scenes_with_every_case())
    car = ours["per_class"]["car"]
    assert [car["pq"], car["sq"], car["rq"]] != pytest.approx(theirs[0].tolist(), abs=1e-6)

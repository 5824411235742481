"""Tests for bridgeseg.evaluation.instance (mAP^r, SDS and MNC protocols)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from bridgeseg.evaluation.instance import (
    THRESHOLDS,
    InstanceEvaluator,
    average_precision,
    mask_iou,
)

SBD_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sbd"
VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]
KEYS = [f"{t:.1f}" for t in THRESHOLDS]


def row_masks(width: int, *ranges: tuple[int, int]) -> torch.Tensor:
    """(len(ranges), 1, width) bool masks on a one-row image, each covering [start, stop)."""
    masks = torch.zeros(len(ranges), 1, width, dtype=torch.bool)
    for index, (start, stop) in enumerate(ranges):
        masks[index, 0, start:stop] = True
    return masks


def brute_force_iou(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    keep = np.ones(pred.shape[1:], dtype=bool) if void is None else ~void
    out = np.zeros((pred.shape[0], gt.shape[0]))
    for i in range(pred.shape[0]):
        for j in range(gt.shape[0]):
            inter = np.logical_and(pred[i], gt[j])[keep].sum()
            union = np.logical_or(pred[i], gt[j])[keep].sum()
            out[i, j] = inter / union if union else 0.0
    return out


def random_image(rng: np.random.Generator, num_classes: int, size: int = 12):
    """Random GT instances and noisy predictions for one image (numpy arrays)."""
    num_gt = int(rng.integers(0, 4))
    gt_masks = rng.random((num_gt, size, size)) < 0.3
    gt_labels = rng.integers(1, num_classes, num_gt)
    preds, labels = [], []
    for mask, label in zip(gt_masks, gt_labels):
        for _ in range(int(rng.integers(0, 3))):
            flip = rng.random(mask.shape) < rng.uniform(0.0, 0.4)
            preds.append(mask ^ flip)
            labels.append(label)
    for _ in range(int(rng.integers(0, 3))):
        preds.append(rng.random((size, size)) < 0.3)
        labels.append(int(rng.integers(1, num_classes)))
    pred_masks = np.asarray(preds, dtype=bool).reshape(len(preds), size, size)
    pred_labels = np.asarray(labels, dtype=np.int64)
    pred_scores = rng.random(len(preds))
    void = rng.random((size, size)) < 0.1
    return pred_masks, pred_labels, pred_scores, gt_masks, gt_labels, void


# ----------------------------------------------------------------------------------- mask_iou


@pytest.mark.parametrize("use_void", [False, True])
def test_mask_iou_matches_brute_force(use_void):
    rng = np.random.default_rng(0)
    pred = rng.random((6, 9, 7)) < 0.4
    gt = rng.random((4, 9, 7)) < 0.4
    pred[0] = False  # empty prediction: IoU with a non-empty gt is 0
    gt[0] = False
    void = rng.random((9, 7)) < 0.25 if use_void else None
    expected = brute_force_iou(pred, gt, void)
    got = mask_iou(torch.from_numpy(pred), torch.from_numpy(gt),
                   None if void is None else torch.from_numpy(void))
    assert got.shape == (6, 4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert got[0, 0] == 0.0  # both empty: union 0 -> 0


def test_mask_iou_void_changes_result_and_empty_shapes():
    pred, gt = row_masks(8, (0, 6)), row_masks(8, (0, 4))
    void = torch.zeros(1, 8, dtype=torch.bool)
    void[0, 4:6] = True
    assert mask_iou(pred, gt).item() == pytest.approx(4 / 6)
    assert mask_iou(pred, gt, void).item() == 1.0
    assert mask_iou(pred[:0], gt).shape == (0, 1)
    assert mask_iou(pred, gt[:0]).shape == (1, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_mask_iou_cuda_matches_cpu():
    gen = torch.Generator().manual_seed(1)
    pred = torch.rand(20, 64, 80, generator=gen) < 0.5
    gt = torch.rand(7, 64, 80, generator=gen) < 0.5
    void = torch.rand(64, 80, generator=gen) < 0.1
    cpu = mask_iou(pred, gt, void)
    cuda = mask_iou(pred.cuda(), gt.cuda(), void.cuda())
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=0, atol=0)


# ----------------------------------------------------------------------------- average_precision


def test_average_precision_envelope_by_hand():
    # 3 GT; ranked detections T F T F T (scores 0.9 .. 0.5), given shuffled to test the sort.
    # cumulative precision 1, 1/2, 2/3, 2/4, 3/5 at recall 1/3, 1/3, 2/3, 2/3, 1.
    # envelope from the right: 1, 2/3, 2/3, 3/5, 3/5.
    # recall steps: 0->1/3 at p=1, 1/3->2/3 at p=2/3, 2/3->1 at p=3/5
    # AP = 1/3 * (1 + 2/3 + 3/5) = 34/45
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = np.array([True, False, True, False, True])
    perm = np.array([3, 0, 4, 2, 1])
    ap = average_precision(tp[perm], scores[perm], num_gt=3, method="area")
    assert ap == pytest.approx(float(Fraction(34, 45)), abs=1e-12)


def test_average_precision_11point_by_hand():
    # same ranking as above. Max precision at recall >= t:
    # t = 0.0, 0.1, 0.2, 0.3 -> 1 (recall 1/3 >= 0.3); t = 0.4, 0.5, 0.6 -> 2/3; t = 0.7 .. 1.0 -> 3/5
    # AP = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = (42/5) / 11 = 42/55
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    tp = np.array([True, False, True, False, True])
    ap = average_precision(tp, scores, num_gt=3, method="11point")
    assert ap == pytest.approx(float(Fraction(42, 55)), abs=1e-12)


def test_average_precision_recall_cap_ties_and_empty():
    # 4 GT, 2 detections both TP: precision 1 up to recall 1/2 -> area 1/2; 11-point: t = 0..0.5 -> 6/11
    assert average_precision(np.array([True, True]), np.array([0.3, 0.7]), 4) == pytest.approx(0.5)
    assert average_precision(np.array([True, True]), np.array([0.3, 0.7]), 4, "11point") == \
        pytest.approx(6 / 11)
    # equal scores keep the given order (stable): F then T -> precision 1/2 at recall 1 -> AP 1/2;
    # T then F -> precision 1 at recall 1 -> AP 1.
    assert average_precision(np.array([False, True]), np.array([0.5, 0.5]), 1) == pytest.approx(0.5)
    assert average_precision(np.array([True, False]), np.array([0.5, 0.5]), 1) == pytest.approx(1.0)
    # 11-point with recall exactly 0.3 must count the t = 0.3 sample point:
    # 10 GT, 3 TP at precision 1 -> t = 0, 0.1, 0.2, 0.3 -> 4/11
    assert average_precision(np.ones(3, bool), np.array([3.0, 2.0, 1.0]), 10, "11point") == \
        pytest.approx(4 / 11)
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0
    with pytest.raises(ValueError, match="11point"):
        average_precision(np.ones(1, bool), np.ones(1), 1, method="voc")


# ----------------------------------------------------------------------------------- protocols


def test_protocols_differ_on_covered_best_instance():
    # one-row image, class 1. GT A = px 0..9 (10 px), GT B = px 10..11 (2 px).
    # det1 (score 0.9) = A exactly -> TP, covers A.
    # det2 (score 0.8) = px 2..11: 8 px of A + both px of B (10 px).
    #   IoU(det2, A) = 8 / (10 + 10 - 8) = 2/3, IoU(det2, B) = 2 / 10 = 0.2.
    # threshold 0.1: SDS takes the best *uncovered* instance, B (0.2 > 0.1) -> TP, AP 1.
    #                MNC's best is A (2/3), already covered -> duplicate FP;
    #                precision 1, 1/2 at recall 1/2, 1/2 -> 11-point: t = 0..0.5 -> 6/11.
    # threshold 0.3: SDS: B's 0.2 is not > 0.3 -> FP; recall 1/2 at precision 1 -> area 1/2.
    gt = row_masks(12, (0, 10), (10, 12))
    pred = row_masks(12, (0, 10), (2, 12))
    args = (pred, torch.tensor([1, 1]), torch.tensor([0.9, 0.8]), gt, torch.tensor([1, 1]))
    results = {}
    for protocol in ("sds", "mnc"):
        evaluator = InstanceEvaluator(["bg", "thing"], protocol=protocol)
        evaluator.process(*args)
        results[protocol] = evaluator
    sds_tp = results["sds"].state_dict()["tp"]
    mnc_tp = results["mnc"].state_dict()["tp"]
    assert sds_tp[:, KEYS.index("0.1")].tolist() == [True, True]
    assert mnc_tp[:, KEYS.index("0.1")].tolist() == [True, False]
    assert sds_tp[:, KEYS.index("0.3")].tolist() == [True, False]
    sds = results["sds"].evaluate()["per_class"]["thing"]
    mnc = results["mnc"].evaluate()["per_class"]["thing"]
    assert sds["0.1"] == pytest.approx(1.0)
    assert mnc["0.1"] == pytest.approx(6 / 11)
    assert sds["0.3"] == pytest.approx(0.5)


def test_overlap_equal_to_threshold():
    # GT = 4 px, prediction = 2 of them: IoU exactly 2/4 = 0.5.
    # threshold 0.5: SDS needs > 0.5 -> FP -> AP 0; MNC accepts >= 0.5 -> TP -> AP 1.
    # threshold 0.4: both TP; threshold 0.6: both FP.
    gt = row_masks(6, (0, 4))
    pred = row_masks(6, (1, 3))
    assert mask_iou(pred, gt).item() == 0.5
    out = {}
    for protocol in ("sds", "mnc"):
        evaluator = InstanceEvaluator(["bg", "thing"], protocol=protocol)
        evaluator.process(pred, torch.tensor([1]), torch.tensor([0.7]), gt, torch.tensor([1]))
        out[protocol] = evaluator.evaluate()
    assert out["sds"]["per_class"]["thing"]["0.5"] == 0.0
    assert out["mnc"]["per_class"]["thing"]["0.5"] == pytest.approx(1.0)
    assert out["sds"]["mAP_r@0.5"] == 0.0 and out["mnc"]["mAP_r@0.5"] == pytest.approx(1.0)
    for protocol in ("sds", "mnc"):
        assert out[protocol]["per_class"]["thing"]["0.4"] == pytest.approx(1.0)
        assert out[protocol]["per_class"]["thing"]["0.6"] == 0.0
    # SDS vol: TP at 0.1 .. 0.4 -> 4/9; MNC: TP at 0.1 .. 0.5 -> 5/9
    assert out["sds"]["mAP_r_vol"] == pytest.approx(4 / 9)
    assert out["mnc"]["mAP_r_vol"] == pytest.approx(5 / 9)


# ----------------------------------------------------------------------------------- evaluator


@pytest.mark.parametrize("protocol", ["sds", "mnc"])
def test_perfect_predictions_give_one(protocol):
    rng = np.random.default_rng(3)
    evaluator = InstanceEvaluator(["bg", "a", "b", "c"], protocol=protocol)
    for _ in range(5):
        _, _, _, gt_masks, gt_labels, void = random_image(rng, 4)
        gt_masks[:, 0, 0] = True  # never empty
        # same score for everything: ties must not matter when every detection is a TP
        evaluator.process(gt_masks, gt_labels, np.ones(len(gt_labels)), gt_masks, gt_labels, void)
    result = evaluator.evaluate()
    assert result["mAP_r@0.5"] == result["mAP_r@0.7"] == result["mAP_r_vol"] == 1.0
    assert result["num_images"] == 5 and result["protocol"] == protocol
    for aps in result["per_class"].values():
        assert aps is not None and list(aps) == KEYS and all(ap == 1.0 for ap in aps.values())


@pytest.mark.parametrize("protocol", ["sds", "mnc"])
def test_no_predictions_give_zero(protocol):
    evaluator = InstanceEvaluator(["bg", "a", "b"], protocol=protocol)
    gt = row_masks(6, (0, 3), (3, 6))
    evaluator.process(torch.zeros(0, 1, 6, dtype=torch.bool), torch.zeros(0, dtype=torch.long),
                      torch.zeros(0), gt, torch.tensor([1, 2]))
    result = evaluator.evaluate()
    assert result["mAP_r@0.5"] == result["mAP_r@0.7"] == result["mAP_r_vol"] == 0.0
    assert result["per_class"]["a"] == {key: 0.0 for key in KEYS}


def test_class_without_ground_truth_is_excluded():
    # class a: one GT, found exactly. class b: no GT anywhere, one (false positive) detection.
    # b is excluded from the means -> mAP 1 (including it as AP 0 would give 0.5).
    gt = row_masks(6, (0, 3))
    pred = row_masks(6, (0, 3), (3, 6))
    evaluator = InstanceEvaluator(["bg", "a", "b"])
    evaluator.process(pred, torch.tensor([1, 2]), torch.tensor([0.5, 0.9]), gt, torch.tensor([1]))
    # an image without any GT or prediction
    evaluator.process(torch.zeros(0, 1, 6, dtype=torch.bool), [], [], torch.zeros(0, 1, 6, dtype=torch.bool), [])
    result = evaluator.evaluate()
    assert result["per_class"]["b"] is None
    assert result["mAP_r@0.5"] == result["mAP_r_vol"] == 1.0
    assert result["num_images"] == 2


def test_false_positive_of_other_class_does_not_match():
    # a prediction labelled b lying exactly on a's instance is not a TP for a.
    gt = row_masks(6, (0, 3), (3, 6))
    pred = row_masks(6, (0, 3))
    evaluator = InstanceEvaluator(["bg", "a", "b"])
    evaluator.process(pred, torch.tensor([2]), torch.tensor([0.5]), gt, torch.tensor([1, 2]))
    assert evaluator.evaluate()["mAP_r@0.5"] == 0.0


@pytest.mark.parametrize("protocol", ["sds", "mnc"])
def test_void_pixels_are_ignored(protocol):
    # GT = px 0..3, void = px 4..5, prediction = px 0..5.
    # ignore_void: IoU = 4/4 = 1 -> TP at every threshold.
    # not ignored: IoU = 4/6 -> TP up to 0.6, FP at 0.7 .. 0.9.
    gt = row_masks(8, (0, 4))
    pred = row_masks(8, (0, 6))
    void = torch.zeros(1, 8, dtype=torch.bool)
    void[0, 4:6] = True
    ignoring = InstanceEvaluator(["bg", "a"], protocol=protocol)
    ignoring.process(pred, [1], [0.9], gt, [1], void)
    assert ignoring.evaluate()["mAP_r_vol"] == 1.0
    counting = InstanceEvaluator(["bg", "a"], protocol=protocol, ignore_void=False)
    counting.process(pred, [1], [0.9], gt, [1], void)
    result = counting.evaluate()
    assert result["mAP_r@0.5"] == 1.0 and result["mAP_r@0.7"] == 0.0
    assert result["mAP_r_vol"] == pytest.approx(6 / 9)


@pytest.mark.parametrize("protocol", ["sds", "mnc"])
def test_merge_and_state_dict_equal_single_pass(protocol):
    rng = np.random.default_rng(7)
    images = [random_image(rng, 4) for _ in range(10)]
    whole = InstanceEvaluator(["bg", "a", "b", "c"], protocol=protocol)
    first = InstanceEvaluator(["bg", "a", "b", "c"], protocol=protocol)
    second = InstanceEvaluator(["bg", "a", "b", "c"], protocol=protocol)
    for index, image in enumerate(images):
        whole.process(*image)
        (first if index < 5 else second).process(*image)
    first.merge(second)
    expected = whole.evaluate()
    assert first.evaluate() == expected
    assert 0.0 < expected["mAP_r@0.5"] < 1.0  # a non-trivial case
    restored = InstanceEvaluator(["bg", "a", "b", "c"], protocol=protocol)
    restored.load_state_dict(whole.state_dict())
    assert restored.evaluate() == expected
    state = whole.state_dict()
    assert set(state) >= {"labels", "scores", "tp", "num_gt", "num_images"}
    assert state["tp"].shape == (state["labels"].numel(), len(THRESHOLDS))
    other = InstanceEvaluator(["bg", "a", "b", "c"], protocol="mnc" if protocol == "sds" else "sds")
    with pytest.raises(ValueError, match="protocol"):
        other.merge(whole)
    whole.reset()
    assert whole.evaluate()["num_images"] == 0


def test_validation_errors():
    with pytest.raises(ValueError, match="sds.*mnc"):
        InstanceEvaluator(["bg", "a"], protocol="coco")
    evaluator = InstanceEvaluator(["bg", "a", "b"])
    gt = row_masks(6, (0, 3))
    with pytest.raises(ValueError, match=r"\(2, 1, 6\)"):
        evaluator.process(row_masks(6, (0, 3), (0, 2)), [1], [0.5], gt, [1])
    with pytest.raises(ValueError, match="shapes"):
        evaluator.process(row_masks(5, (0, 3)), [1], [0.5], gt, [1])
    with pytest.raises(ValueError, match="3"):
        evaluator.process(row_masks(6, (0, 3)), [3], [0.5], gt, [1])
    with pytest.raises(ValueError, match="0"):
        evaluator.process(row_masks(6, (0, 3)), [1], [0.5], gt, [0])
    with pytest.raises(ValueError, match="finite"):
        evaluator.process(row_masks(6, (0, 3)), [1], [float("nan")], gt, [1])
    with pytest.raises(ValueError, match="void"):
        evaluator.process(row_masks(6, (0, 3)), [1], [0.5], gt, [1], torch.zeros(2, 6, dtype=torch.bool))
    assert evaluator.evaluate()["num_images"] == 0  # nothing recorded by failed calls


def test_thresholds():
    assert THRESHOLDS == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ------------------------------------------------------------------------------------ real SBD


def load_sbd_instances(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) bool instance masks and (N,) class ids of an SBD ``inst/<name>.mat``."""
    scipy_io = pytest.importorskip("scipy.io")
    path = SBD_DIR / "inst" / f"{name}.mat"
    if not path.exists():
        pytest.skip(f"SBD fixture {path} is absent")
    gt = scipy_io.loadmat(path, struct_as_record=False, squeeze_me=True)["GTinst"]
    segmentation = np.asarray(gt.Segmentation)
    categories = np.atleast_1d(np.asarray(gt.Categories)).astype(np.int64)
    ids = np.arange(1, categories.size + 1)
    masks = segmentation[None] == ids[:, None, None]
    return masks, categories


SBD_NAMES = ("2008_000051", "2008_000195")


def test_sbd_fixture_contents():
    masks, categories = load_sbd_instances("2008_000051")
    assert masks.shape == (5, 371, 500)
    assert categories.tolist() == [5, 5, 9, 15, 15]  # 2 bottles, a chair, 2 persons
    assert masks.sum(axis=(1, 2)).tolist() == [184, 499, 6425, 10272, 14345]
    masks, categories = load_sbd_instances("2008_000195")
    assert masks.shape == (5, 333, 500)
    assert categories.tolist() == [4, 4, 15, 15, 15]  # 2 boats, 3 persons
    assert masks.sum(axis=(1, 2)).min() > 0


@pytest.mark.parametrize("protocol", ["sds", "mnc"])
def test_sbd_ground_truth_as_predictions(protocol):
    evaluator = InstanceEvaluator(VOC_CLASSES, protocol=protocol)
    for name in SBD_NAMES:
        masks, categories = load_sbd_instances(name)
        scores = np.linspace(1.0, 0.5, categories.size)
        evaluator.process(torch.from_numpy(masks), torch.from_numpy(categories), scores,
                          torch.from_numpy(masks), torch.from_numpy(categories))
    result = evaluator.evaluate()
    assert result["mAP_r@0.5"] == result["mAP_r@0.7"] == result["mAP_r_vol"] == 1.0
    present = {name for name, aps in result["per_class"].items() if aps is not None}
    assert present == {"boat", "bottle", "chair", "person"}


@pytest.mark.parametrize("protocol, person_ap", [("sds", Fraction(4, 5)), ("mnc", Fraction(9, 11))])
def test_sbd_dropped_instance_caps_recall(protocol, person_ap):
    # Persons: 2 in 2008_000051 + 3 in 2008_000195 = 5 GT. Dropping the last person of
    # 2008_000195 leaves 4 exact detections, all TP at precision 1: recall is capped at 4/5.
    # area AP = 4/5; 11-point AP = (t = 0, 0.1, ..., 0.8 -> 9 points of precision 1) / 11 = 9/11.
    # Boat, bottle and chair stay at 1: mAP = (3 + person_ap) / 4 at every threshold.
    evaluator = InstanceEvaluator(VOC_CLASSES, protocol=protocol)
    for name in SBD_NAMES:
        masks, categories = load_sbd_instances(name)
        keep = np.ones(categories.size, dtype=bool)
        if name == "2008_000195":
            keep[4] = False
            assert categories[4] == VOC_CLASSES.index("person")
        scores = np.linspace(1.0, 0.5, int(keep.sum()))
        evaluator.process(masks[keep], categories[keep], scores, masks, categories)
    result = evaluator.evaluate()
    assert result["per_class"]["person"] == pytest.approx({key: float(person_ap) for key in KEYS})
    assert result["per_class"]["boat"] == {key: 1.0 for key in KEYS}
    expected = float((3 + person_ap) / 4)
    for key in ("mAP_r@0.5", "mAP_r@0.7", "mAP_r_vol"):
        assert result[key] == pytest.approx(expected)

"""Tests of bridgeseg.evaluation.semantic against independent numpy computations."""

from __future__ import annotations

import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bridgeseg.data.io import write_label
from bridgeseg.evaluation.semantic import (
    SemanticEvaluator,
    confusion_matrix,
    metrics_from_confusion,
    score_semantic_folders,
)

VOID = 255
VOC_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voc2012"
VOC_STEM = "2007_000063"


# ------------------------------------------------------------------------------------------------
# Independent reference implementations (plain numpy, no shared code with the module)
# ------------------------------------------------------------------------------------------------


def random_labels(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int,
                  void_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Random (pred, gt) label maps; a fraction of gt pixels are void."""
    gt = rng.integers(0, num_classes, size=shape)
    gt[rng.random(shape) < void_fraction] = VOID
    pred = rng.integers(0, num_classes, size=shape)
    return pred, gt


def brute_force_confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel-by-pixel loop."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if g != VOID:
            matrix[g, p] += 1
    return matrix


def mask_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> dict:
    """Metrics straight from boolean masks of each class."""
    labelled = gt != VOID
    pixel_accuracy = float(np.mean(pred[labelled] == gt[labelled]))
    ious, accuracies = [], []
    for c in range(num_classes):
        gt_c = (gt == c) & labelled
        pred_c = (pred == c) & labelled
        union = np.sum(gt_c | pred_c)
        ious.append(np.sum(gt_c & pred_c) / union if union else None)
        accuracies.append(np.sum(gt_c & pred_c) / np.sum(gt_c) if gt_c.any() else None)
    return {
        "pixel_accuracy": pixel_accuracy,
        "mean_iou": float(np.mean([v for v in ious if v is not None])),
        "mean_accuracy": float(np.mean([v for v in accuracies if v is not None])),
        "per_class_iou": ious,
        "per_class_accuracy": accuracies,
    }


def assert_metrics_close(actual: dict, expected: dict) -> None:
    for key in ("pixel_accuracy", "mean_iou", "mean_accuracy"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-12), key
    for key in ("per_class_iou", "per_class_accuracy"):
        assert len(actual[key]) == len(expected[key])
        for got, want in zip(actual[key], expected[key]):
            if want is None:
                assert got is None, key
            else:
                assert got == pytest.approx(float(want), abs=1e-12), key


# ------------------------------------------------------------------------------------------------
# confusion_matrix
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_classes = 7
    pred, gt = random_labels(rng, (3, 17, 23), num_classes)
    result = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), num_classes)
    assert result.dtype == torch.int64
    assert result.shape == (num_classes, num_classes)
    np.testing.assert_array_equal(result.numpy(), brute_force_confusion(pred, gt, num_classes))
    assert int(result.sum()) == int(np.sum(gt != VOID))


def test_confusion_matrix_orientation_rows_are_ground_truth():
    # one pixel of gt class 0 predicted as class 2 -> entry [0, 2]
    result = confusion_matrix(torch.tensor([2]), torch.tensor([0]), 3)
    expected = torch.zeros(3, 3, dtype=torch.int64)
    expected[0, 2] = 1
    assert torch.equal(result, expected)


def test_confusion_matrix_custom_ignore_index_and_narrow_dtypes():
    gt = torch.tensor([[0, 1], [-1, 1]], dtype=torch.int16)
    pred = torch.tensor([[0, 0], [1, 1]], dtype=torch.uint8)
    result = confusion_matrix(pred, gt, 2, ignore_index=-1)
    assert torch.equal(result, torch.tensor([[1, 0], [1, 1]]))


def test_confusion_matrix_prediction_at_void_pixels_is_not_checked():
    gt = torch.tensor([0, VOID])
    pred = torch.tensor([0, VOID])  # e.g. the ground truth copied as a prediction
    assert torch.equal(confusion_matrix(pred, gt, 2), torch.tensor([[1, 0], [0, 0]]))


@pytest.mark.parametrize(
    "pred, gt, value",
    [
        ([0, 3], [0, 1], "3"),      # prediction == num_classes
        ([0, -1], [0, 1], "-1"),    # negative prediction
        ([0, 1], [0, 7], "7"),      # gt neither class nor ignore
        ([0, 1], [0, -2], "-2"),    # negative gt
        ([0, 1], [0, 254], "254"),  # gt close to, but not, ignore_index
    ],
)
def test_confusion_matrix_bad_values_raise(pred, gt, value):
    with pytest.raises(ValueError) as info:
        confusion_matrix(torch.tensor(pred), torch.tensor(gt), 3)
    message = str(info.value)
    assert re.search(rf"(?<![\d-]){re.escape(value)}(?!\d)", message), message
    assert "0, 2" in message  # the valid range


def test_confusion_matrix_shape_mismatch_and_float_inputs_raise():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2)
    with pytest.raises(TypeError, match="integer"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_confusion_matrix_on_cuda_matches_cpu():
    rng = np.random.default_rng(5)
    pred, gt = random_labels(rng, (2, 64, 48), 21)
    cpu = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 21)
    cuda = confusion_matrix(torch.from_numpy(pred).cuda(), torch.from_numpy(gt).cuda(), 21)
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)
    with pytest.raises(ValueError, match="21"):
        confusion_matrix(torch.full((4,), 21).cuda(), torch.zeros(4, dtype=torch.long).cuda(), 21)
    evaluator = SemanticEvaluator(21)
    evaluator.process(torch.from_numpy(pred).cuda(), torch.from_numpy(gt).cuda())
    assert torch.equal(evaluator.confusion.cpu(), cpu)


# ------------------------------------------------------------------------------------------------
# metrics_from_confusion
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_metrics_match_mask_computation(seed):
    rng = np.random.default_rng(seed)
    num_classes = 6
    pred, gt = random_labels(rng, (40, 31), num_classes)
    # make the classes unbalanced and remove one class from gt so the "present" rule matters
    gt[gt == 4] = 0
    matrix = brute_force_confusion(pred, gt, num_classes)
    result = metrics_from_confusion(matrix, num_images=1)
    assert_metrics_close(result, mask_metrics(pred, gt, num_classes))
    assert result["per_class_accuracy"][4] is None
    assert result["per_class_iou"][4] == 0.0  # predicted but absent from gt


def test_metrics_hand_computed_example():
    # 4 classes; 7 labelled pixels and one void pixel (whose prediction 3 must not count).
    gt = np.array([0, 0, 0, 0, 1, 1, 1, VOID])
    pred = np.array([0, 0, 1, 2, 1, 1, 0, 3])
    # Confusion (rows gt, cols pred):
    #   gt 0: pred 0 x2, pred 1 x1, pred 2 x1 -> [2, 1, 1, 0]
    #   gt 1: pred 1 x2, pred 0 x1           -> [1, 2, 0, 0]
    #   gt 2, gt 3: no pixel                  -> zeros
    # pixel accuracy = (2 + 2) / 7 = 4/7
    # accuracy: class 0 = 2/4, class 1 = 2/3, classes 2 and 3 absent from gt -> None
    #   mean accuracy = (1/2 + 2/3) / 2 = 7/12
    # IoU: class 0 = 2 / (4 + 3 - 2) = 2/5; class 1 = 2 / (3 + 3 - 2) = 1/2;
    #   class 2 only predicted = 0 / (0 + 1 - 0) = 0 (counted); class 3 nowhere -> None (excluded)
    #   mean IoU = (2/5 + 1/2 + 0) / 3 = 3/10
    matrix = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(gt), 4)
    assert matrix.tolist() == [[2, 1, 1, 0], [1, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    result = metrics_from_confusion(matrix, num_images=1)
    assert result["pixel_accuracy"] == pytest.approx(float(Fraction(4, 7)))
    assert result["mean_accuracy"] == pytest.approx(float(Fraction(7, 12)))
    assert result["mean_iou"] == pytest.approx(float(Fraction(3, 10)))
    assert result["per_class_accuracy"] == pytest.approx([0.5, float(Fraction(2, 3)), None, None])
    assert result["per_class_iou"] == pytest.approx([0.4, 0.5, 0.0, None])
    assert result["per_class_iou"][2] == 0.0 and result["per_class_iou"][3] is None
    # mistaken for: class 0's wrong pixels tie 1 : 1 between classes 1 and 2 -> the lower, 1, 1/4;
    # class 1's wrong pixel is class 0, 1/3; classes 2 and 3 have no pixel
    assert result["per_class_mistaken_for"] == [{"class": 1, "fraction": 0.25},
                                                {"class": 0, "fraction": pytest.approx(1 / 3)}, None, None]
    assert result["num_images"] == 1


@pytest.mark.parametrize("seed", [0, 1])
def test_mistaken_for_matches_pixel_counts(seed):
    """The class most of each class's true pixels are predicted as, from the label maps directly."""
    rng = np.random.default_rng(seed)
    num_classes = 5
    pred, gt = random_labels(rng, (37, 29), num_classes)
    pred[(gt == 2) & (rng.random(gt.shape) < 0.7)] = 4   # class 2 mostly taken for class 4
    pred[gt == 3] = 3                                     # class 3 never wrong
    result = metrics_from_confusion(brute_force_confusion(pred, gt, num_classes), num_images=1)
    for k in range(num_classes):
        wrong = pred[(gt == k) & (pred != k)]
        if wrong.size == 0:
            assert result["per_class_mistaken_for"][k] is None
            continue
        counts = np.bincount(wrong, minlength=num_classes)
        expected = int(np.flatnonzero(counts == counts.max())[0])
        entry = result["per_class_mistaken_for"][k]
        assert entry["class"] == expected
        assert entry["fraction"] == pytest.approx(counts.max() / np.sum(gt == k), abs=1e-12)
    assert result["per_class_mistaken_for"][2]["class"] == 4
    assert result["per_class_mistaken_for"][3] is None


def test_metrics_types_and_ranges():
    rng = np.random.default_rng(9)
    matrix = rng.integers(0, 50, size=(5, 5))
    for confusion in (matrix, torch.from_numpy(matrix)):
        result = metrics_from_confusion(confusion, num_images=3)
        assert set(result) == {"pixel_accuracy", "mean_accuracy", "mean_iou", "per_class_iou",
                               "per_class_accuracy", "per_class_mistaken_for", "num_images"}
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iou"):
            assert type(result[key]) is float and 0.0 <= result[key] <= 1.0
        assert all(type(v) is float and 0.0 <= v <= 1.0 for v in result["per_class_iou"])
        assert type(result["num_images"]) is int and result["num_images"] == 3


def test_metrics_of_empty_matrix_are_zero_not_nan():
    result = metrics_from_confusion(np.zeros((3, 3), dtype=np.int64), num_images=0)
    assert result["pixel_accuracy"] == 0.0
    assert result["mean_accuracy"] == 0.0
    assert result["mean_iou"] == 0.0
    assert result["per_class_iou"] == [None, None, None]
    assert result["per_class_accuracy"] == [None, None, None]


def test_metrics_reject_non_square_matrix():
    with pytest.raises(ValueError, match="square"):
        metrics_from_confusion(np.zeros((2, 3)), num_images=1)


# ------------------------------------------------------------------------------------------------
# SemanticEvaluator
# ------------------------------------------------------------------------------------------------


def random_dataset(seed: int, num_classes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes = [(13, 17), (20, 9), (5, 31), (16, 16), (1, 1)]
    return [random_labels(rng, size, num_classes) for size in sizes]


def test_evaluator_equals_one_matrix_over_concatenated_pixels():
    num_classes = 5
    data = random_dataset(0, num_classes)
    evaluator = SemanticEvaluator(num_classes)
    for pred, gt in data:
        evaluator.process(torch.from_numpy(pred), torch.from_numpy(gt))
    all_pred = np.concatenate([pred.ravel() for pred, _ in data])
    all_gt = np.concatenate([gt.ravel() for _, gt in data])
    assert evaluator.confusion.dtype == torch.int64
    np.testing.assert_array_equal(evaluator.confusion.numpy(), brute_force_confusion(all_pred, all_gt, num_classes))
    result = evaluator.evaluate()
    assert result["num_images"] == len(data)
    assert_metrics_close(result, mask_metrics(all_pred, all_gt, num_classes))


def test_evaluator_merge_equals_single_evaluator():
    num_classes = 4
    data = random_dataset(1, num_classes)
    whole, first, second = (SemanticEvaluator(num_classes) for _ in range(3))
    for index, (pred, gt) in enumerate(data):
        whole.process(torch.from_numpy(pred), torch.from_numpy(gt))
        (first if index < 2 else second).process(torch.from_numpy(pred), torch.from_numpy(gt))
    first.merge(second)
    assert torch.equal(first.confusion, whole.confusion)
    assert first.num_images == whole.num_images == len(data)
    assert first.evaluate() == whole.evaluate()
    with pytest.raises(ValueError, match="num_classes"):
        first.merge(SemanticEvaluator(num_classes + 1))


def test_evaluator_batch_equals_single_images():
    rng = np.random.default_rng(2)
    pred, gt = random_labels(rng, (4, 11, 14), 3)
    batched, single = SemanticEvaluator(3), SemanticEvaluator(3)
    batched.process(torch.from_numpy(pred), torch.from_numpy(gt))
    for index in range(4):
        single.process(torch.from_numpy(pred[index]), torch.from_numpy(gt[index]))
    assert torch.equal(batched.confusion, single.confusion)
    assert batched.num_images == single.num_images == 4


def test_evaluator_reset_state_dict_and_bad_inputs():
    rng = np.random.default_rng(3)
    pred, gt = random_labels(rng, (2, 8, 8), 3)
    evaluator = SemanticEvaluator(3)
    evaluator.process(torch.from_numpy(pred), torch.from_numpy(gt))
    evaluator.all_reduce()  # torch.distributed not initialised: no-op
    assert evaluator.num_images == 2

    restored = SemanticEvaluator(3)
    restored.load_state_dict(evaluator.state_dict())
    assert torch.equal(restored.confusion, evaluator.confusion)
    assert restored.evaluate() == evaluator.evaluate()
    with pytest.raises(ValueError):
        SemanticEvaluator(4).load_state_dict(evaluator.state_dict())

    evaluator.reset()
    assert evaluator.num_images == 0 and int(evaluator.confusion.sum()) == 0

    with pytest.raises(ValueError, match="argmax"):
        evaluator.process(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError):
        evaluator.process(torch.tensor([[3]]), torch.tensor([[0]]))


def _all_reduce_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = SemanticEvaluator(3)
        pred, gt = random_labels(np.random.default_rng(rank), (rank + 1, 6, 5), 3)
        evaluator.process(torch.from_numpy(pred), torch.from_numpy(gt))
        evaluator.all_reduce()
        results[rank] = (evaluator.confusion.tolist(), evaluator.num_images)
    finally:
        dist.destroy_process_group()


def test_evaluator_all_reduce_sums_over_ranks(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    world_size = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_all_reduce_worker, args=(world_size, str(tmp_path / "init"), results), nprocs=world_size)
        results = dict(results)
    expected = np.zeros((3, 3), dtype=np.int64)
    for rank in range(world_size):
        pred, gt = random_labels(np.random.default_rng(rank), (rank + 1, 6, 5), 3)
        expected += brute_force_confusion(pred, gt, 3)
    for rank in range(world_size):
        confusion, num_images = results[rank]
        np.testing.assert_array_equal(np.array(confusion), expected)
        assert num_images == 1 + 2


# ------------------------------------------------------------------------------------------------
# score_semantic_folders on the real VOC fixture
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def voc_label() -> Path:
    path = VOC_DIR / "SegmentationClass" / f"{VOC_STEM}.png"
    if not path.is_file():
        pytest.skip(f"VOC fixture {path} not present")
    return path


def raw_indices(path: Path) -> np.ndarray:
    """Palette indices read with PIL directly (independent of bridgeseg.data.io)."""
    with Image.open(path) as image:
        assert image.mode == "P"
        return np.asarray(image).astype(np.int64)


def make_dirs(tmp_path: Path) -> tuple[Path, Path]:
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    return gt_dir, pred_dir


def test_voc_fixture_against_itself_is_perfect(tmp_path, voc_label):
    gt_dir, pred_dir = make_dirs(tmp_path)
    shutil.copy(voc_label, gt_dir)
    shutil.copy(voc_label, pred_dir)
    result = score_semantic_folders(gt_dir, pred_dir)
    assert result["pixel_accuracy"] == 1.0
    assert result["mean_accuracy"] == 1.0
    assert result["mean_iou"] == 1.0
    assert result["num_images"] == 1
    assert len(result["per_class_iou"]) == 21
    present = {0, 9, 12}
    for c in range(21):
        if c in present:
            assert result["per_class_iou"][c] == 1.0 and result["per_class_accuracy"][c] == 1.0
        else:
            assert result["per_class_iou"][c] is None and result["per_class_accuracy"][c] is None


def test_voc_fixture_void_pixels_predicted_as_a_class_still_perfect(tmp_path, voc_label):
    gt_dir, pred_dir = make_dirs(tmp_path)
    shutil.copy(voc_label, gt_dir)
    gt = raw_indices(voc_label)
    assert (gt == VOID).sum() > 0
    pred = gt.copy()
    pred[gt == VOID] = 15  # "person" everywhere on the void border
    write_label(pred_dir / voc_label.name, pred)
    result = score_semantic_folders(gt_dir, pred_dir, progress=True)
    assert result["pixel_accuracy"] == 1.0
    assert result["mean_iou"] == 1.0
    assert result["per_class_iou"][15] is None


def test_voc_fixture_dog_predicted_as_background(tmp_path, voc_label):
    gt_dir, pred_dir = make_dirs(tmp_path)
    shutil.copy(voc_label, gt_dir)
    gt = raw_indices(voc_label)
    assert set(np.unique(gt).tolist()) == {0, 9, 12, VOID}
    pred = gt.copy()
    pred[gt == 12] = 0
    write_label(pred_dir / voc_label.name, pred)

    background, chair, dog = (int(np.sum(gt == c)) for c in (0, 9, 12))
    labelled = background + chair + dog
    # background: all its pixels right, plus the dog pixels wrongly predicted as background
    expected_iou = {0: background / (background + dog), 9: 1.0, 12: 0.0}
    result = score_semantic_folders(gt_dir, pred_dir)
    for c, iou in expected_iou.items():
        assert result["per_class_iou"][c] == pytest.approx(iou)
    assert result["mean_iou"] == pytest.approx(sum(expected_iou.values()) / 3)
    assert result["pixel_accuracy"] == pytest.approx((background + chair) / labelled)
    assert result["mean_accuracy"] == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert result["per_class_accuracy"][12] == 0.0


# ------------------------------------------------------------------------------------------------
# score_semantic_folders errors and classes.txt
# ------------------------------------------------------------------------------------------------


def write_pair(gt_dir: Path, pred_dir: Path | None, stem: str, gt: np.ndarray, pred: np.ndarray) -> None:
    write_label(gt_dir / f"{stem}.png", gt)
    if pred_dir is not None:
        write_label(pred_dir / f"{stem}.png", pred)


def small_pair() -> tuple[np.ndarray, np.ndarray]:
    gt = np.array([[0, 1, 2], [VOID, 1, 0]])
    return gt, np.where(gt == VOID, 0, gt)


def test_folder_scoring_matches_mask_metrics_and_ignores_extra_predictions(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    data = random_dataset(4, 21)
    for index, (pred, gt) in enumerate(data):
        write_pair(gt_dir, pred_dir, f"img_{index}", gt, pred)
    write_label(pred_dir / "extra.png", np.full((3, 3), 20))  # no gt: ignored
    all_pred = np.concatenate([pred.ravel() for pred, _ in data])
    all_gt = np.concatenate([gt.ravel() for _, gt in data])
    result = score_semantic_folders(gt_dir, pred_dir, num_classes=21)
    assert result["num_images"] == len(data)
    assert_metrics_close(result, mask_metrics(all_pred, all_gt, 21))


def test_folder_missing_prediction_names_the_file(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    gt, pred = small_pair()
    write_pair(gt_dir, pred_dir, "a", gt, pred)
    write_pair(gt_dir, None, "b", gt, pred)
    with pytest.raises(FileNotFoundError) as info:
        score_semantic_folders(gt_dir, pred_dir)
    assert str(pred_dir / "b.png") in str(info.value)


def test_folder_several_missing_predictions_are_counted(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    gt, pred = small_pair()
    write_pair(gt_dir, pred_dir, "present", gt, pred)
    for index in range(8):
        write_pair(gt_dir, None, f"missing_{index}", gt, pred)
    with pytest.raises(FileNotFoundError) as info:
        score_semantic_folders(gt_dir, pred_dir)
    message = str(info.value)
    assert "8" in message
    assert str(pred_dir / "missing_0.png") in message
    assert "missing_7.png" not in message  # only the first few are listed


def test_folder_size_mismatch(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    write_pair(gt_dir, pred_dir, "img", np.zeros((4, 6), dtype=np.int64), np.zeros((6, 4), dtype=np.int64))
    with pytest.raises(ValueError) as info:
        score_semantic_folders(gt_dir, pred_dir, num_classes=2)
    message = str(info.value)
    assert "img.png" in message and "4x6" in message and "6x4" in message


def test_folder_predicted_value_out_of_range(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    gt, pred = small_pair()
    pred[0, 0] = 5
    write_pair(gt_dir, pred_dir, "img", gt, pred)
    with pytest.raises(ValueError) as info:
        score_semantic_folders(gt_dir, pred_dir, num_classes=3)
    message = str(info.value)
    assert str(pred_dir / "img.png") in message and "5" in message and "num_classes=3" in message


def test_folder_bad_ground_truth_value(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    gt, pred = small_pair()
    gt[0, 0] = 200
    write_pair(gt_dir, pred_dir, "img", gt, pred)
    with pytest.raises(ValueError) as info:
        score_semantic_folders(gt_dir, pred_dir, num_classes=3)
    message = str(info.value)
    assert str(gt_dir / "img.png") in message and "200" in message


def test_folder_missing_or_empty_folders(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape(str(gt_dir))):
        score_semantic_folders(gt_dir, pred_dir)  # both empty
    gt, pred = small_pair()
    write_pair(gt_dir, None, "img", gt, pred)
    with pytest.raises(FileNotFoundError, match=re.escape(str(pred_dir))):
        score_semantic_folders(gt_dir, pred_dir)  # prediction folder empty
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_semantic_folders(tmp_path / "nowhere", pred_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        score_semantic_folders(gt_dir, tmp_path / "nowhere")


def test_folder_classes_txt_lookup(tmp_path):
    gt_dir, pred_dir = make_dirs(tmp_path)
    gt, pred = small_pair()  # classes 0..2
    write_pair(gt_dir, pred_dir, "img", gt, pred)

    # no classes.txt: PASCAL VOC's 21 classes
    assert len(score_semantic_folders(gt_dir, pred_dir)["per_class_iou"]) == 21

    # classes.txt in the parent of gt_dir; blank lines do not count
    (tmp_path / "classes.txt").write_text("background\n\ncat\ndog\nbird\n\n")
    result = score_semantic_folders(gt_dir, pred_dir)
    assert len(result["per_class_iou"]) == 4
    assert result["per_class_iou"][3] is None and result["mean_iou"] == 1.0

    # classes.txt inside gt_dir takes precedence; 2 classes make the value 2 invalid
    (gt_dir / "classes.txt").write_text("background\ncat\n")
    with pytest.raises(ValueError, match="num_classes=2"):
        score_semantic_folders(gt_dir, pred_dir)

    # an explicit num_classes wins over classes.txt
    assert len(score_semantic_folders(gt_dir, pred_dir, num_classes=3)["per_class_iou"]) == 3

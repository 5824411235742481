"""Localization targets on hand-made masks: boxes, encoding, weights, flips and scales."""

from __future__ import annotations

import math

import pytest
import torch

from bridgeseg.data.instances import instances_from_maps
from bridgeseg.targets import (SIZE_REFERENCE, box_targets, class_transforms, decode_boxes, elementwise_box_iou,
                               instance_statistics)


def scene():
    """An L-shaped instance (class 2) wrapped around a square (class 2), a bar of class 1, void."""
    instance = torch.zeros(1, 10, 12, dtype=torch.long)
    semantic = torch.zeros(1, 10, 12, dtype=torch.long)
    instance[0, 1:8, 1:3] = 1      # vertical stroke of the L: rows 1..7, cols 1..2
    instance[0, 6:8, 3:7] = 1      # horizontal stroke: rows 6..7, cols 3..6
    instance[0, 2:5, 4:7] = 2      # a 3 x 3 square inside the L's box
    instance[0, 0, 8:12] = 3       # a 1 x 4 bar
    semantic[instance == 1] = 2
    semantic[instance == 2] = 2
    semantic[instance == 3] = 1
    instance[0, 9, 0] = 255
    semantic[0, 9, 0] = 255
    return instance, semantic


def test_instance_statistics_boxes_classes_areas():
    instance, semantic = scene()
    inverse, boxes, classes, areas = instance_statistics(instance, semantic, num_classes=3)
    # rows/cols are pixel centres; boxes extend half a pixel beyond the extreme centres
    torch.testing.assert_close(boxes, torch.tensor([[0.5, 0.5, 6.5, 7.5], [3.5, 1.5, 6.5, 4.5], [7.5, -0.5, 11.5, 0.5]]))
    assert classes.tolist() == [2, 2, 1]
    assert areas.tolist() == [14 + 8, 9, 4]
    assert inverse[0, 9, 0] == -1 and inverse[0, 0, 0] == -1 and inverse[0, 3, 5] == 1


def test_instance_statistics_with_sparse_large_ids_matches_small_ids():
    """Ids like 26001 or 2**31 (a user's 32-bit instance PNGs) give the same statistics, in the same
    order, as the same instances numbered 1, 2, 3."""
    instance, semantic = scene()
    large = instance.clone()
    for small, big in ((1, 26_001), (2, 2**31), (3, 2**31 + 7)):
        large[instance == small] = big
    for got, want in zip(instance_statistics(large, semantic, 3), instance_statistics(instance, semantic, 3)):
        torch.testing.assert_close(got, want)


def test_targets_encode_offsets_relative_to_box_size_and_log_sizes():
    instance, semantic = scene()
    targets = box_targets(instance, semantic, num_classes=3, stride=1)
    # pixel (row 7, col 1) of the L: box centre (cx, cy) = (3.5, 4.0), size h = 7, w = 6
    dy, dx, log_h, log_w = targets.transforms[0, :, 7, 1].tolist()
    assert dy == pytest.approx((4.0 - 7) / 7)
    assert dx == pytest.approx((3.5 - 1) / 6)
    assert log_h == pytest.approx(math.log(7 / SIZE_REFERENCE))
    assert log_w == pytest.approx(math.log(6 / SIZE_REFERENCE))
    assert targets.classes[0, 7, 1] == 2 and targets.classes[0, 0, 9] == 1
    assert targets.classes[0, 9, 0] == 0 and targets.weights[0, 9, 0] == 0  # void carries no loss
    assert targets.classes[0, 0, 0] == 0 and targets.weights[0, 0, 0] == 0  # background neither


def test_decoding_the_targets_gives_back_each_pixel_s_box():
    instance, semantic = scene()
    for stride in (1, 2, 3):
        targets = box_targets(instance, semantic, num_classes=3, stride=stride)
        decoded = decode_boxes(targets.transforms, stride)
        has_target = targets.classes > 0
        torch.testing.assert_close(decoded.permute(0, 2, 3, 1)[has_target], targets.boxes.permute(0, 2, 3, 1)[has_target])
        iou = elementwise_box_iou(decoded, targets.boxes)
        assert torch.all(iou[has_target] > 0.9999)


def test_sampling_on_the_output_grid_uses_full_resolution_boxes():
    instance, semantic = scene()
    full = box_targets(instance, semantic, num_classes=3, stride=1)
    coarse = box_targets(instance, semantic, num_classes=3, stride=2)
    torch.testing.assert_close(coarse.boxes, full.boxes[..., ::2, ::2])
    torch.testing.assert_close(coarse.transforms, full.transforms[..., ::2, ::2])


@pytest.mark.parametrize("weighting,expected", [("equal", [1 / 22, 1 / 9, 1 / 4]), ("none", [1, 1, 1]),
                                                ("box", [1 / 42, 1 / 9, 1 / 4]),
                                                ("sqrt", [22 ** -0.5, 1 / 3, 1 / 2])])
def test_instance_weightings(weighting, expected):
    instance, semantic = scene()
    targets = box_targets(instance, semantic, num_classes=3, stride=1, weighting=weighting)
    got = [targets.weights[0, 1, 1].item(), targets.weights[0, 3, 5].item(), targets.weights[0, 0, 9].item()]
    assert got == pytest.approx(expected)


def test_unknown_weighting_is_an_error():
    instance, semantic = scene()
    with pytest.raises(ValueError, match="equal"):
        box_targets(instance, semantic, 3, weighting="area")


def test_horizontal_flip_negates_dx_only():
    instance, semantic = scene()
    plain = box_targets(instance, semantic, num_classes=3)
    flipped = box_targets(instance.flip(-1), semantic.flip(-1), num_classes=3)
    mirrored = plain.transforms.flip(-1)
    torch.testing.assert_close(flipped.transforms[:, 1], -mirrored[:, 1])
    torch.testing.assert_close(flipped.transforms[:, [0, 2, 3]], mirrored[:, [0, 2, 3]])


def test_scaling_the_image_shifts_log_sizes_and_keeps_offsets():
    instance, semantic = scene()
    plain = box_targets(instance, semantic, num_classes=3)
    big = box_targets(instance.repeat_interleave(2, 1).repeat_interleave(2, 2),
                      semantic.repeat_interleave(2, 1).repeat_interleave(2, 2), num_classes=3)
    has_target = plain.classes[0] > 0
    torch.testing.assert_close(big.transforms[0, 2:, ::2, ::2][:, has_target],
                               plain.transforms[0, 2:][:, has_target] + math.log(2))
    # offsets relative to the box size are scale free: big pixel 2r is original coordinate r - 0.25 (pixel r
    # became big pixels 2r and 2r + 1), so its offset is larger by exactly 0.25 / (original box size)
    sizes = SIZE_REFERENCE * plain.transforms[0, 2:].exp()
    expected = plain.transforms[0, :2] + 0.25 / sizes
    torch.testing.assert_close(big.transforms[0, :2, ::2, ::2][:, has_target], expected[:, has_target])


def test_class_transforms_picks_each_pixel_s_class_channels():
    maps = torch.arange(2 * 12 * 2 * 2, dtype=torch.float).view(2, 12, 2, 2)
    classes = torch.tensor([[[1, 2], [3, 0]], [[3, 3], [2, 1]]])
    picked = class_transforms(maps, classes)
    for n in range(2):
        for i in range(2):
            for j in range(2):
                c = max(int(classes[n, i, j]), 1)
                torch.testing.assert_close(picked[n, :, i, j], maps[n, 4 * (c - 1):4 * c, i, j])


def test_no_instance_gives_empty_targets():
    zeros = torch.zeros(2, 6, 6, dtype=torch.long)
    targets = box_targets(zeros, zeros, num_classes=4, stride=2)
    assert targets.transforms.shape == (2, 4, 3, 3) and not targets.classes.any() and not targets.weights.any()


def test_instances_from_maps():
    instance, semantic = scene()
    masks, labels, void = instances_from_maps(instance[0], semantic[0], num_classes=3)
    assert labels.tolist() == [2, 2, 1]
    assert masks.sum(dim=(1, 2)).tolist() == [22, 9, 4]
    assert void.sum() == 1 and void[9, 0]


def _reference_targets(instances, semantic, num_classes, stride, weighting):
    """Box targets by plain loops over the instances of each image (an independent computation)."""
    n, height, width = instances.shape
    h, w = -(-height // stride), -(-width // stride)
    transforms, boxes = torch.zeros(n, 4, h, w), torch.zeros(n, 4, h, w)
    classes, weights = torch.zeros(n, h, w, dtype=torch.long), torch.zeros(n, h, w)
    for image in range(n):
        ids, sem = instances[image], semantic[image]
        valid = (ids > 0) & (ids != 255) & (sem > 0) & (sem < num_classes)
        for instance in ids[valid].unique().tolist():
            mask = valid & (ids == instance)
            rows, cols = mask.nonzero(as_tuple=True)
            x0, y0, x1, y1 = cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5
            label = int(torch.bincount(sem[mask], minlength=num_classes).argmax())
            area = float(mask.sum())
            weight = {"equal": 1 / area, "box": 1 / float((x1 - x0) * (y1 - y0)), "none": 1.0}[weighting]
            for i, j in mask[::stride, ::stride].nonzero().tolist():
                y, x = i * stride, j * stride
                bh, bw = float(y1 - y0), float(x1 - x0)
                transforms[image, :, i, j] = torch.tensor([((y0 + y1) / 2 - y) / bh, ((x0 + x1) / 2 - x) / bw,
                                                           math.log(bh / SIZE_REFERENCE), math.log(bw / SIZE_REFERENCE)])
                boxes[image, :, i, j] = torch.tensor([float(x0), float(y0), float(x1), float(y1)])
                classes[image, i, j], weights[image, i, j] = label, weight
    return transforms, boxes, classes, weights


@pytest.mark.parametrize("stride, weighting", [(1, "equal"), (8, "box"), (4, "none")])
def test_vectorised_targets_equal_a_loop_over_instances(synthetic_root, stride, weighting):
    from bridgeseg.config import DataConfig
    from bridgeseg.data.loading import TrainingSamples
    from bridgeseg.data.voc import VOCSegmentation

    dataset = VOCSegmentation(synthetic_root, "train", with_instances=True)
    samples = TrainingSamples(dataset, DataConfig(root=str(synthetic_root), crop_size=48, copy_paste=1.0), seed=3)
    batch = [samples[(i, i)] for i in range(4)]
    instances, semantic = torch.stack([b["instance"] for b in batch]), torch.stack([b["semantic"] for b in batch])
    found = box_targets(instances, semantic, 6, stride, weighting)
    expected = _reference_targets(instances, semantic, 6, stride, weighting)
    assert int((expected[2] > 0).sum()) >= 20  # the batch has targets to compare
    for got, want in zip((found.transforms, found.boxes, found.classes, found.weights), expected):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want.to(got.dtype), rtol=1e-5, atol=1e-6)

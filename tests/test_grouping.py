"""Tests for bridgeseg.grouping (paper section 2.1: score + transform maps -> instances)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bridgeseg.grouping import InstanceConfig, Instances, candidate_masks, group_instances, upsample_masks, vote_boxes
from bridgeseg.nms import cluster_votes, region_nms
from bridgeseg.targets import box_targets, decode_boxes

VOID = 255


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------

def canvas(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty (instance map, semantic map)."""
    return torch.zeros(height, width, dtype=torch.long), torch.zeros(height, width, dtype=torch.long)


def paint(instances, semantic, region, instance_id: int, label: int) -> None:
    instances[region] = instance_id
    semantic[region] = label


def oracle_transforms(instances, semantic, num_classes: int, stride: int) -> torch.Tensor:
    """(4 (C - 1), h, w): every pixel carries its own instance's ground-truth transform in its class's channels."""
    targets = box_targets(instances[None], semantic[None], num_classes, stride=stride)
    transforms, classes = targets.transforms[0], targets.classes[0]
    out = torch.zeros(4 * (num_classes - 1), *classes.shape)
    channels = (classes - 1).clamp(min=0).unsqueeze(0) * 4 + torch.arange(4).view(4, 1, 1)
    out.scatter_(0, channels, transforms)  # pixels without target write zeros (== their current value)
    return out


def oracle_probs(semantic, num_classes: int, stride: int) -> torch.Tensor:
    """(C, h, w) one-hot of the semantic map sampled at ``stride``; void counts as background."""
    sampled = semantic[::stride, ::stride].clone()
    sampled[sampled == VOID] = 0
    return F.one_hot(sampled, num_classes).permute(2, 0, 1).float()


def ground_truth(instances, semantic) -> list[tuple[torch.Tensor, int]]:
    ids = [i for i in instances.unique().tolist() if i not in (0, VOID)]
    return [(instances == i, int(semantic[instances == i].mode().values)) for i in ids]


def run_oracle(instances, semantic, num_classes: int, stride: int = 1, **params) -> Instances:
    probs = oracle_probs(semantic, num_classes, stride)
    transforms = oracle_transforms(instances, semantic, num_classes, stride)
    return group_instances(probs, transforms, stride, tuple(instances.shape), InstanceConfig(**params))


def assert_exact(result: Instances, instances, semantic) -> None:
    """Same number of instances, and each predicted mask/label is a distinct ground-truth instance."""
    truth = ground_truth(instances, semantic)
    assert len(result) == len(truth)
    assert result.masks.shape == (len(truth), *instances.shape) and result.masks.dtype == torch.bool
    unmatched = list(range(len(truth)))
    for mask, label in zip(result.masks, result.labels.tolist()):
        match = [j for j in unmatched if torch.equal(mask, truth[j][0]) and label == truth[j][1]]
        assert match, f"predicted class-{label} mask matches no ground-truth instance"
        unmatched.remove(match[0])


def best_iou(mask: torch.Tensor, masks: torch.Tensor) -> float:
    inter = (masks & mask).flatten(1).sum(1).float()
    union = (masks | mask).flatten(1).sum(1).float()
    return float((inter / union).max()) if len(masks) else 0.0


def box_iou_py(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def brute_force_clusters(boxes: list, scores: list, threshold: float) -> tuple[list, list]:
    """Greedy NMS in pure Python; each box goes to the first kept box overlapping it above threshold."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept, assignment = [], [None] * len(scores)
    for i in order:
        covering = [k for k, j in enumerate(kept) if box_iou_py(boxes[i], boxes[j]) > threshold]
        if covering:
            assignment[i] = covering[0]
        else:
            assignment[i] = len(kept)
            kept.append(i)
    return kept, assignment


def random_boxes(generator: torch.Generator, count: int, extent: float = 100.0) -> torch.Tensor:
    corner = torch.rand(count, 2, generator=generator) * extent
    size = 5 + torch.rand(count, 2, generator=generator) * 40
    return torch.cat([corner, corner + size], dim=1).double()


# ------------------------------------------------------------------------------------------------
# exact recovery from oracle inputs at stride 1
# ------------------------------------------------------------------------------------------------

def test_separated_instances_are_recovered_exactly():
    instances, semantic = canvas(20, 24)
    paint(instances, semantic, (slice(1, 6), slice(2, 9)), 1, 1)
    paint(instances, semantic, (slice(10, 18), slice(3, 7)), 2, 1)
    paint(instances, semantic, (slice(8, 15), slice(12, 22)), 3, 2)
    result = run_oracle(instances, semantic, num_classes=3)
    assert_exact(result, instances, semantic)
    assert torch.allclose(result.scores, torch.ones(3))
    # the reported box is the instance's box
    for mask, box in zip(result.masks, result.boxes.tolist()):
        rows, cols = mask.nonzero().unbind(1)
        expected = [cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5]
        assert box == pytest.approx([float(v) for v in expected], abs=1e-4)


def test_touching_instances_of_one_class_stay_apart():
    instances, semantic = canvas(12, 18)
    paint(instances, semantic, (slice(2, 8), slice(2, 8)), 1, 1)
    paint(instances, semantic, (slice(2, 8), slice(8, 14)), 2, 1)  # shares an edge with instance 1
    assert_exact(run_oracle(instances, semantic, num_classes=2), instances, semantic)


def test_instance_inside_the_box_of_another_l_shaped_one():
    instances, semantic = canvas(14, 14)
    paint(instances, semantic, (slice(2, 12), slice(2, 4)), 1, 1)  # L: vertical bar ...
    paint(instances, semantic, (slice(10, 12), slice(2, 12)), 1, 1)  # ... and foot, box 10 x 10
    paint(instances, semantic, (slice(3, 9), slice(5, 11)), 2, 1)  # 6 x 6 inside the L's box
    # box IoU 36 / 100 < 0.5, so both survive NMS
    assert_exact(run_oracle(instances, semantic, num_classes=2), instances, semantic)
    # ... but with a threshold under 0.36 the square is merged into the L
    merged = run_oracle(instances, semantic, num_classes=2, nms_threshold=0.3)
    assert len(merged) == 1 and merged.masks[0].sum() == (instances > 0).sum()


def test_several_classes_with_identical_boxes_are_kept_apart():
    instances, semantic = canvas(16, 16)
    rows, cols = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    square = (rows >= 2) & (rows < 10) & (cols >= 2) & (cols < 10)
    even = (rows + cols) % 2 == 0
    paint(instances, semantic, square & even, 1, 1)  # a checkerboard: both instances have
    paint(instances, semantic, square & ~even, 2, 2)  # the same box, in different classes
    paint(instances, semantic, (slice(12, 15), slice(1, 15)), 3, 3)
    paint(instances, semantic, (slice(11, 12), slice(0, 16)), VOID, VOID)
    result = run_oracle(instances, semantic, num_classes=4)
    assert_exact(result, instances, semantic)
    assert sorted(result.labels.tolist()) == [1, 2, 3]


def test_empty_image_gives_no_instances():
    instances, semantic = canvas(9, 11)
    paint(instances, semantic, (slice(0, 2), slice(0, 11)), VOID, VOID)
    result = run_oracle(instances, semantic, num_classes=3)
    assert len(result) == 0
    assert result.masks.shape == (0, 9, 11) and result.masks.dtype == torch.bool
    assert result.labels.shape == (0,) and result.scores.shape == (0,) and result.boxes.shape == (0, 4)


def test_large_stride_one_oracle_is_exact():
    instances, semantic = canvas(512, 512)
    for index in range(10):
        row, col = divmod(index, 4)
        top, left = 10 + row * 160, 10 + col * 125
        paint(instances, semantic, (slice(top, top + 100 + 5 * index), slice(left, left + 60 + 5 * index)),
              index + 1, 1 + index % 3)
    # two touching same-class neighbours and an L around nothing: still exact
    paint(instances, semantic, (slice(480, 500), slice(0, 200)), 11, 2)
    paint(instances, semantic, (slice(480, 500), slice(200, 400)), 12, 2)
    assert_exact(run_oracle(instances, semantic, num_classes=4), instances, semantic)


# ------------------------------------------------------------------------------------------------
# strided oracle inputs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stride", [2, 4])
def test_strided_oracle_recovers_every_instance(stride):
    instances, semantic = canvas(126, 161)  # not a multiple of either stride
    paint(instances, semantic, (slice(5, 61), slice(6, 49)), 1, 1)
    paint(instances, semantic, (slice(5, 61), slice(49, 87)), 2, 1)  # touches instance 1
    paint(instances, semantic, (slice(73, 122), slice(14, 154)), 3, 2)
    paint(instances, semantic, (slice(8, 67), slice(95, 159)), 4, 2)
    paint(instances, semantic, (slice(22, 53), slice(111, 145)), 5, 1)  # class-1 hole inside instance 4
    result = run_oracle(instances, semantic, num_classes=3, stride=stride)
    truth = ground_truth(instances, semantic)
    assert len(result) == len(truth)
    assert result.masks.shape == (len(truth), 126, 161)
    for mask, label in truth:
        same_class = result.masks[result.labels == label]
        assert best_iou(mask, same_class) > 0.8


# ------------------------------------------------------------------------------------------------
# candidates (top-n)
# ------------------------------------------------------------------------------------------------

def test_candidate_masks_top_n():
    probs = torch.tensor([[0.2, 0.7, 0.1, 0.4],
                          [0.5, 0.2, 0.6, 0.4],
                          [0.3, 0.1, 0.3, 0.2]]).view(3, 1, 4)
    top1 = candidate_masks(probs, 1)
    top2 = candidate_masks(probs, 2)
    assert top1.shape == (2, 1, 4)
    # pixels 0 and 2: class 2 is second; pixel 3: tie of classes 0 and 1 -> class 0 ranks first
    assert top1[:, 0].tolist() == [[True, False, True, False], [False, False, False, False]]
    assert top2[:, 0].tolist() == [[True, True, True, True], [True, False, True, False]]
    assert candidate_masks(probs, 3).all()


def test_candidate_masks_top_one_is_argmax():
    probs = torch.rand(5, 6, 7, generator=torch.Generator().manual_seed(0)).softmax(0)
    argmax = probs.argmax(0)
    expected = torch.stack([argmax == c for c in range(1, 5)])
    assert torch.equal(candidate_masks(probs, 1), expected)


def test_second_best_class_votes_only_with_top_n_two():
    height, width = 8, 8
    block = (slice(1, 5), slice(1, 5))
    probs = torch.tensor([0.9, 0.05, 0.05]).view(3, 1, 1).repeat(1, height, width)
    probs[:, block[0], block[1]] = torch.tensor([0.1, 0.6, 0.3]).view(3, 1, 1)
    instances, semantic = canvas(height, width)
    paint(instances, semantic, block, 1, 1)
    one_class = oracle_transforms(instances, semantic, num_classes=2, stride=1)
    transforms = one_class.repeat(2, 1, 1)  # class 2 votes the same boxes as class 1
    top1 = group_instances(probs, transforms, 1, (height, width), InstanceConfig(top_n=1))
    top2 = group_instances(probs, transforms, 1, (height, width), InstanceConfig(top_n=2, min_score=0.2))
    assert top1.labels.tolist() == [1]
    assert top2.labels.tolist() == [1, 2]
    assert torch.allclose(top2.scores, torch.tensor([0.6, 0.3]))
    for mask in top2.masks:
        assert torch.equal(mask, instances == 1)


def test_per_rank_masks_region_nms_removes_the_duplicate_pass():
    height, width = 10, 12
    probs = torch.tensor([0.9, 0.05, 0.05]).view(3, 1, 1).repeat(1, height, width)
    probs[:, 1:9, 1:9] = torch.tensor([0.1, 0.8, 0.1]).view(3, 1, 1)  # class 1 first
    probs[:, 1:9, 9:11] = torch.tensor([0.1, 0.3, 0.6]).view(3, 1, 1)  # class 1 second
    instances, semantic = canvas(height, width)
    paint(instances, semantic, (slice(1, 9), slice(1, 11)), 1, 1)
    transforms = oracle_transforms(instances, semantic, num_classes=2, stride=1).repeat(2, 1, 1)
    union = group_instances(probs, transforms, 1, (height, width), InstanceConfig(top_n=2, min_score=0.2))
    class1 = union.masks[union.labels == 1]
    assert len(class1) == 1 and torch.equal(class1[0], instances == 1)
    # (merge_across_classes off: it would join class 2's top-1 piece, unsure between 1 and 2, to class 1)
    nested = InstanceConfig(top_n=2, min_score=0.2, per_rank_masks=True, merge_across_classes=False)
    result = group_instances(probs, transforms, 1, (height, width), nested)
    class1 = result.masks[result.labels == 1]
    # pass 1 (8 x 8, score 0.8) and pass 2 (8 x 10) overlap by IoU 0.8: only the better survives
    assert len(class1) == 1 and class1[0].sum() == 64
    assert result.scores[result.labels == 1].item() == pytest.approx(0.8)
    loose = group_instances(probs, transforms, 1, (height, width),
                            InstanceConfig(top_n=2, min_score=0.2, per_rank_masks=True, region_nms_threshold=0.9,
                                           merge_fragments=0.0))  # the two passes stay apart
    assert (loose.labels == 1).sum() == 2


# ------------------------------------------------------------------------------------------------
# votes and clustering
# ------------------------------------------------------------------------------------------------

def test_vote_boxes_is_decode_boxes_per_class():
    transforms = torch.randn(12, 5, 6, generator=torch.Generator().manual_seed(1))
    boxes = vote_boxes(transforms, 8)
    assert boxes.shape == (3, 4, 5, 6)
    assert torch.equal(boxes[2], decode_boxes(transforms[8:12], 8))


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("chunk_size", [8192, 7])
def test_cluster_votes_matches_brute_force(threshold, chunk_size):
    generator = torch.Generator().manual_seed(int(threshold * 10) + chunk_size)
    boxes = random_boxes(generator, 200)
    scores = torch.rand(200, generator=generator).double()
    kept, assignment = cluster_votes(boxes, scores, threshold, chunk_size=chunk_size)
    expected_kept, expected_assignment = brute_force_clusters(boxes.tolist(), scores.tolist(), threshold)
    assert 1 < len(expected_kept) < 200
    assert kept.tolist() == expected_kept
    assert assignment.tolist() == expected_assignment


def test_cluster_votes_merges_duplicate_votes_like_brute_force():
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(generator, 60).repeat(4, 1)  # each box voted 4 times ...
    boxes += torch.rand(boxes.shape, generator=generator).double() * 1e-3  # ... up to a sub-quantum jitter
    scores = torch.rand(240, generator=generator).double()
    kept, assignment = cluster_votes(boxes, scores, 0.5, chunk_size=5)
    expected_kept, expected_assignment = brute_force_clusters(boxes.tolist(), scores.tolist(), 0.5)
    assert kept.tolist() == expected_kept
    assert assignment.tolist() == expected_assignment


def test_votes_within_the_quantum_become_one_nms_entry():
    from bridgeseg.nms import _merge_identical_votes

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.01, 0.0, 10.0, 10.01], [0.2, 0.0, 10.0, 10.0],
                          [0.0, 0.0, 10.0, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.9])
    representative, group_scores, inverse = _merge_identical_votes(boxes, scores, 1.0 / 16)
    assert inverse[0] == inverse[1] == inverse[3] != inverse[2]
    assert representative[inverse[0]] == 1  # the best vote, lowest index among ties
    assert group_scores[inverse].tolist() == pytest.approx([0.9, 0.9, 0.7, 0.9])
    _, _, exact = _merge_identical_votes(boxes, scores, 0.0)
    assert exact[0] == exact[3] and len(exact.unique()) == 3


def test_cluster_votes_top_k_only_keeps_the_best_entries():
    generator = torch.Generator().manual_seed(4)
    boxes = random_boxes(generator, 100, extent=300.0)
    scores = torch.rand(100, generator=generator).double()
    full_kept, full_assignment = cluster_votes(boxes, scores, 0.5)
    kept, assignment = cluster_votes(boxes, scores, 0.5, top_k=20)
    # greedy NMS is sequential: the capped result is a prefix of the full one
    assert kept.tolist() == full_kept.tolist()[:len(kept)]
    assert len(kept) < len(full_kept)
    covered = full_assignment < len(kept)
    assert torch.equal(assignment[covered], full_assignment[covered])
    assert (assignment[~covered] == -1).all()


def test_cluster_votes_empty():
    kept, assignment = cluster_votes(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert kept.shape == (0,) and assignment.shape == (0,)


# ------------------------------------------------------------------------------------------------
# region NMS, confidence, filters
# ------------------------------------------------------------------------------------------------

def row_masks(width: int, *ranges: tuple[int, int]) -> torch.Tensor:
    masks = torch.zeros(len(ranges), 1, width, dtype=torch.bool)
    for index, (start, stop) in enumerate(ranges):
        masks[index, 0, start:stop] = True
    return masks


def test_region_nms_is_per_class():
    masks = row_masks(30, (0, 10), (0, 9), (0, 10), (15, 25))
    scores = torch.tensor([0.7, 0.9, 0.8, 0.6])
    labels = torch.tensor([1, 1, 2, 1])
    # the class-1 duplicate (0.7) goes, the same mask of class 2 stays; output by score
    assert region_nms(masks, scores, labels, 0.5).tolist() == [1, 2, 3]


def test_region_nms_is_greedy():
    masks = row_masks(20, (0, 10), (3, 13), (6, 16))  # IoU 7/13 with each neighbour, 4/16 end to end
    kept = region_nms(masks, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 1, 1]), 0.5)
    assert kept.tolist() == [0, 2]  # the middle one is suppressed and so cannot suppress the last


def test_confidence_is_mean_probability_of_the_cluster():
    generator = torch.Generator().manual_seed(5)
    instances, semantic = canvas(12, 16)
    paint(instances, semantic, (slice(1, 6), slice(1, 7)), 1, 1)
    paint(instances, semantic, (slice(7, 11), slice(2, 14)), 2, 1)
    transforms = oracle_transforms(instances, semantic, num_classes=2, stride=1)
    foreground = 0.55 + 0.4 * torch.rand(12, 16, generator=generator)
    probs = torch.stack([1 - foreground, foreground])
    probs[:, semantic == 0] = probs[:, semantic == 0].flip(0)  # background pixels: background wins
    result = group_instances(probs, transforms, 1, (12, 16))
    assert len(result) == 2
    for mask, score in zip(result.masks, result.scores):
        assert score.item() == pytest.approx(foreground[mask].mean().item(), abs=1e-6)
    assert result.scores[0] >= result.scores[1]


def test_min_cluster_size_and_max_instances():
    instances, semantic = canvas(10, 30)
    for index in range(5):
        paint(instances, semantic, (slice(2, 2 + index + 1), slice(6 * index, 6 * index + 3)), index + 1, 1)
    probs = oracle_probs(semantic, 2, 1)
    probs[:, semantic == 1] = 0.0
    for index in range(5):
        probs[0, instances == index + 1], probs[1, instances == index + 1] = 0.1 * index, 1 - 0.1 * index
    transforms = oracle_transforms(instances, semantic, num_classes=2, stride=1)
    big = group_instances(probs, transforms, 1, (10, 30), InstanceConfig(min_cluster_size=7))
    assert [int(m.sum()) for m in big.masks] == [9, 12, 15]  # sizes 3 and 6 are dropped
    best = group_instances(probs, transforms, 1, (10, 30), InstanceConfig(max_instances=2))
    assert best.scores.tolist() == pytest.approx([1.0, 0.9])
    assert [int(m.sum()) for m in best.masks] == [3, 6]


# ------------------------------------------------------------------------------------------------
# geometry, containers, devices
# ------------------------------------------------------------------------------------------------

def test_upsample_masks_geometry():
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, 1, 1] = True
    masks[1, :, 3] = True
    up = upsample_masks(masks, 4, (11, 15))
    assert up.shape == (2, 11, 15)
    # an isolated grid pixel covers input pixels within half a stride of its centre (4, 4)
    assert up[0].nonzero().min(0).values.tolist() == [2, 2]
    assert up[0].nonzero().max(0).values.tolist() == [6, 6]
    # the last grid column (centre 12) extends to the image border by edge replication
    assert up[1].all(0).nonzero().squeeze(1).tolist() == [10, 11, 12, 13, 14]
    try:
        from bridgeseg.geometry import resize_to_input
    except Exception:  # the models package may not import in every environment
        return
    reference = resize_to_input(masks.float()[None], (11, 15), 4)[0] >= 0.5
    assert torch.equal(up, reference)


def test_instances_container():
    empty = Instances.empty((4, 5))
    assert len(empty) == 0 and empty.masks.shape == (0, 4, 5)
    moved = empty.to("cpu")
    assert isinstance(moved, Instances) and moved.boxes.shape == (0, 4)


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        group_instances(torch.rand(3, 4, 4), torch.rand(4, 4, 4), 1, (4, 4))
    with pytest.raises(ValueError):
        InstanceConfig(top_n=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stride", [1, 4])
def test_cuda_matches_cpu(stride):
    generator = torch.Generator().manual_seed(6)
    instances, semantic = canvas(96, 128)
    paint(instances, semantic, (slice(4, 50), slice(5, 60)), 1, 1)
    paint(instances, semantic, (slice(4, 50), slice(60, 100)), 2, 1)
    paint(instances, semantic, (slice(55, 90), slice(10, 120)), 3, 2)
    probs = oracle_probs(semantic, 3, stride)
    probs = (probs * 4 + torch.rand(probs.shape, generator=generator)).softmax(0)
    transforms = oracle_transforms(instances, semantic, 3, stride)
    transforms = transforms + 0.05 * torch.randn(transforms.shape, generator=generator)
    params = InstanceConfig(nms_chunk_size=64)
    cpu = group_instances(probs, transforms, stride, (96, 128), params)
    gpu = group_instances(probs.cuda(), transforms.cuda(), stride, (96, 128), params)
    assert gpu.masks.device.type == "cuda"
    gpu = gpu.to("cpu")
    assert len(cpu) == len(gpu) > 3
    assert torch.equal(cpu.labels, gpu.labels)
    assert torch.equal(cpu.masks, gpu.masks)
    assert torch.allclose(cpu.scores, gpu.scores, atol=1e-5)
    assert torch.allclose(cpu.boxes, gpu.boxes, atol=1e-3)

"""From maps to instances beyond the grouping itself: masks at the class map's resolution, the
connected-components baseline, oracle maps (tie-break, ranking), and the paper's settings as
configs (Tables 6 and 7, frozen batch norm)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from bridgeseg.components import connected_component_instances
from bridgeseg.config import Config, load_config, packaged_config_dir
from bridgeseg.geometry import resize_to_input
from bridgeseg.grouping import InstanceConfig, group_instances
from bridgeseg.oracle import apply_oracle, oracle_probabilities, oracle_transforms
from bridgeseg.predictor import find_instances
from bridgeseg.refine import (assign_pixels, fill_gaps, mask_extents, merge_fragments, pixel_extents,
                              pixels_in_boxes, ranked_classes)
from bridgeseg.tta import ImageMaps


def _discs(height: int = 96, width: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """(instance map, class map) of two touching discs of class 1 and a square of class 2."""
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    instances = torch.zeros(height, width, dtype=torch.long)
    instances[(ys - 40) ** 2 + (xs - 34) ** 2 <= 26 ** 2] = 1
    instances[((ys - 44) ** 2 + (xs - 84) ** 2 <= 25 ** 2) & (instances == 0)] = 2  # touches disc 1
    instances[(ys >= 74) & (ys < 92) & (xs >= 100) & (xs < 122)] = 3
    semantic = torch.tensor([0, 1, 1, 2])[instances]
    return instances, semantic


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


# ------------------------------------------------------------------------------------------------
# masks at the class map's resolution
# ------------------------------------------------------------------------------------------------

def test_class_map_masks_follow_the_class_map_not_the_grid():
    instances, semantic = _discs()
    stride = 8
    probs = oracle_probabilities(semantic, 3, stride)
    transforms = oracle_transforms(instances, semantic, 3, stride)
    on_map = group_instances(probs, transforms, stride, tuple(semantic.shape), InstanceConfig(), class_map=semantic)
    on_grid = group_instances(probs, transforms, stride, tuple(semantic.shape), InstanceConfig(masks="grid"))
    truth = [instances == k for k in (1, 2, 3)]
    for found in (on_map, on_grid):
        assert sorted(found.labels.tolist()) == [1, 1, 2]
    best_map = [max(_iou(mask, t) for mask in on_map.masks) for t in truth]
    best_grid = [max(_iou(mask, t) for mask in on_grid.masks) for t in truth]
    assert min(best_map) > 0.95  # the class map's own boundaries; the touching discs split where they meet
    assert min(best_map) > max(best_grid)  # the stride-8 octagons are worse for every instance
    for mask, label in zip(on_map.masks, on_map.labels):
        assert bool((semantic[mask] == label).all())  # a mask never leaves its class


def test_pixels_join_the_cluster_of_their_grid_neighbourhood():
    ids = torch.tensor([[0, 0, -1, 1], [0, -1, -1, 1]])
    owner = assign_pixels(ids, 4, (8, 16))
    assert owner.shape == (8, 16)
    assert (owner[:, :4] == 0).all() and (owner[:, 12:] == 1).all()  # at their own cells
    assert (owner[:4, 6] == 0).all() and (owner[:, 9:12] == 1).all()  # a cluster reaches its neighbours' pixels
    assert (owner[4:, 4:8] == -1).all()  # pixels whose four grid cells have no cluster stay out
    filled = fill_gaps(ids, 1)
    assert (filled >= 0).all() and filled[0, 2] == 1 and filled[1, 1] == 0


def test_each_pixel_reads_the_cluster_map_of_its_own_layer():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(-1, 6, (3, 5, 7), generator=generator)  # three classes' grids, -1 = no cluster
    layers = torch.randint(-1, 3, (33, 50), generator=generator)  # each pixel's class layer, -1 = none
    owner = assign_pixels(ids, 8, (33, 50), layers=layers)
    for layer in range(3):  # the same as each layer alone, on that layer's pixels
        alone = assign_pixels(ids[layer], 8, (33, 50))
        assert torch.equal(owner[layers == layer], alone[layers == layer])
    assert (owner[layers < 0] == -1).all()


def test_ranked_classes_are_the_upsampled_scores_sorted():
    generator = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(5, 6, 7, generator=generator) * 2, dim=0)
    probs[:, 2, 3] = torch.tensor([0.2, 0.4, 0.4, 0.0, 0.0])  # a tie: the lower class first
    image = resize_to_input(probs[None], (44, 51), 8)[0]
    for rank, floor in ((1, 0.0), (2, 0.0), (3, 0.25)):
        ranked = ranked_classes(probs, 8, (44, 51), rank, floor)
        assert ranked.shape == (rank, 44, 51)
        for y, x in [(0, 0), (16, 24), (43, 50), (21, 30), (5, 47)]:
            scores = image[:, y, x].tolist()
            order = sorted(range(5), key=lambda c: (-scores[c], c))[:rank]
            expected = [c if c > 0 and scores[c] > 0 and scores[c] >= floor else 0 for c in order]
            assert ranked[:, y, x].tolist() == expected, (rank, y, x)


def test_mask_extents_are_the_bounding_rows_and_columns():
    masks = torch.zeros(3, 9, 11, dtype=torch.bool)
    masks[0, 2:5, 3:4] = True
    masks[0, 7, 9] = True
    masks[2, 0, 0] = True
    assert mask_extents(masks).tolist() == [[2, 8, 3, 10], [0, 0, 0, 0], [0, 1, 0, 1]]
    owner, ys, xs = masks.nonzero(as_tuple=True)
    assert torch.equal(pixel_extents(owner, ys, xs, 3), mask_extents(masks))  # the same from the masks' pixels


def test_a_top_two_mask_uses_top_two_pixels_at_image_resolution():
    height, width = 40, 48
    probs = torch.tensor([0.8, 0.15, 0.05]).view(3, 1, 1).repeat(1, 5, 6)
    probs[:, 1:4, 1:4] = torch.tensor([0.3, 0.6, 0.1]).view(3, 1, 1)
    instances, semantic = torch.zeros(height, width, dtype=torch.long), torch.zeros(height, width, dtype=torch.long)
    instances[8:32, 8:32], semantic[8:32, 8:32] = 1, 1
    transforms = oracle_transforms(instances, semantic, 2, 8).repeat(2, 1, 1)
    found = group_instances(probs, transforms, 8, (height, width), InstanceConfig(top_n=2))
    expected = resize_to_input(probs[None], (height, width), 8)[0]
    for mask, label in zip(found.masks, found.labels):
        top2 = expected.argsort(0, descending=True)[:2]
        assert bool((top2 == label).any(0)[mask].all())


# ------------------------------------------------------------------------------------------------
# instance.method: connected components of the class map
# ------------------------------------------------------------------------------------------------

def test_connected_components_match_an_independent_labelling():
    instances, semantic = _discs()
    semantic[10:14, 110:114] = 1  # a speck: dropped by min_cluster_size (16 px < 2 cells of 64)
    probs = torch.rand(3, 12, 16, generator=torch.Generator().manual_seed(0)).softmax(0)
    found = connected_component_instances(semantic, probs, 8, InstanceConfig(min_cluster_size=2))
    expected = []
    for label in (1, 2):
        regions, count = scipy.ndimage.label(semantic.numpy() == label, structure=np.ones((3, 3)))
        upsampled = F.interpolate(probs[None], size=(89, 121), mode="bilinear", align_corners=True)
        upsampled = F.pad(upsampled, (0, 7, 0, 7), mode="replicate")[0, label].numpy()
        for region in range(1, count + 1):
            mask = regions == region
            if mask.sum() >= 128:
                expected.append((label, mask, upsampled[mask].mean()))
    expected.sort(key=lambda item: -item[2])
    assert len(found) == len(expected) == 2  # the touching discs are one region: the baseline's weakness
    for (label, mask, score), got_mask, got_label, got_score in zip(expected, found.masks, found.labels,
                                                                     found.scores):
        assert got_label == label and np.array_equal(got_mask.numpy(), mask)
        assert got_score.item() == pytest.approx(score, abs=1e-5)
    box = found.boxes[found.labels == 2][0].tolist()
    assert box == [99.5, 73.5, 121.5, 91.5]


def test_instance_method_is_honoured_by_find_instances():
    instances, semantic = _discs()
    probs = oracle_probabilities(semantic, 3, 8)
    maps = ImageMaps(probs, oracle_transforms(instances, semantic, 3, 8), 8, semantic)
    grouped = find_instances(maps, tuple(semantic.shape), load_config(None).instance)
    components = find_instances(maps, tuple(semantic.shape),
                                load_config(None, ["instance.method=connected_components"]).instance)
    assert len(grouped) == 3 and len(components) == 2
    semantic_only = ImageMaps(probs, None, 8, semantic)
    assert find_instances(semantic_only, tuple(semantic.shape), InstanceConfig()) is None
    assert len(find_instances(semantic_only, tuple(semantic.shape), InstanceConfig(method="connected_components"))) == 2


# ------------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------------

def test_one_hot_oracle_probabilities_make_no_runner_up_candidates():
    """With top_n = 2 and ground-truth (one-hot) probabilities, every other class ties at 0: none of
    them may become a candidate (the lower-index tie-break once made class 1 one everywhere)."""
    instances, semantic = _discs()
    maps = apply_oracle(None, "both", semantic, instances, 3, 8)
    found = find_instances(maps, tuple(semantic.shape), InstanceConfig(top_n=2))
    assert sorted(found.labels.tolist()) == [1, 1, 2]
    for mask, label in zip(found.masks, found.labels):
        assert bool((semantic[mask] == label).all())


def test_oracle_class_maps_are_ranked_by_the_network_s_probabilities():
    """--oracle semantic: ground-truth candidates, but the confidences of the network, so that AP
    still has a ranking (one-hot scores would give every instance 1.0)."""
    instances, semantic = _discs()
    network_probs = torch.full((3, 12, 16), 0.2)
    network_probs[1], network_probs[2] = 0.7, 0.1
    network_probs[1, :, 8:] = 0.4  # the right disc is less certain
    network = ImageMaps(network_probs, oracle_transforms(instances, semantic, 3, 8), 8, semantic)
    maps = apply_oracle(network, "semantic", semantic, instances, 3, 8)
    found = find_instances(maps, tuple(semantic.shape), InstanceConfig())
    scores = {int(mask.nonzero()[:, 1].float().mean() > 60): float(score)
              for mask, label, score in zip(found.masks, found.labels, found.scores) if label == 1}
    assert scores[0] == pytest.approx(0.7) and scores[1] == pytest.approx(0.4, abs=0.05)
    assert len(set(found.scores.tolist())) == 3


# ------------------------------------------------------------------------------------------------
# the paper's settings as configs
# ------------------------------------------------------------------------------------------------

def _differences(a: str, b: str) -> dict:
    left, right = (load_config(packaged_config_dir() / f"{name}.yaml").to_dict() for name in (a, b))
    return {f"{section}.{key}": (left[section][key], right[section][key]) for section in left
            for key in left[section] if left[section][key] != right[section][key]}


def test_table_6_rows_change_exactly_what_the_paper_s_rows_change():
    base = "sbd-inst_fcrn50-os8-k5d12"
    assert _differences(base, base + "_bs") == {"loss.box_bootstrap": (False, True)}
    assert _differences(base + "_bs", base + "_bs_weighted") == {"loss.instance_weighting": ("none", "box")}
    assert _differences(base + "_bs_weighted", "sbd-inst_fcrn101-os8-k5d12_bs_weighted") == {"model.depth": (50, 101)}
    semantic = load_config(packaged_config_dir() / f"{base}.yaml").loss
    assert semantic.bootstrap and semantic.threshold is None and semantic.min_kept == 512  # the same in every row


@pytest.mark.parametrize("family", ["voc12aug_fcrn101", "cityscapes_fcrn152"])
def test_table_7_rows_keep_exactly_the_k_hardest_and_differ_only_in_k(family):
    rows = [f"{family}-os8-k5d12_bs{k}" for k in (256, 512, 1024)]
    for row, k in zip(rows, (256, 512, 1024)):
        loss = load_config(packaged_config_dir() / f"{row}.yaml").loss
        assert loss.bootstrap and loss.threshold is None and loss.min_kept == k
    assert _differences(rows[0], rows[1]) == {"loss.min_kept": (256, 512)}
    assert _differences(rows[1], rows[2]) == {"loss.min_kept": (512, 1024)}


def test_frozen_batch_norm_leaves_the_non_linear_head_learning():
    from bridgeseg.config import ModelConfig
    from bridgeseg.engine.train import set_train_mode
    from bridgeseg.models.build import build_model

    model = build_model(ModelConfig(arch="joint", depth=18, output_stride=16, head="nonlinear", head_channels=8,
                                    init="random", freeze_bn=True), 3)
    set_train_mode(model, freeze_bn=True)
    head_bn = [m for name, m in model.named_modules() if name.startswith("heads.") and isinstance(m, torch.nn.BatchNorm2d)]
    backbone_bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(head_bn) == 2 and backbone_bn
    assert all(m.training and m.weight.requires_grad for m in head_bn)
    assert all(not m.training and not m.weight.requires_grad for m in backbone_bn)
    assert Config().model.freeze_bn is False


def test_only_thing_classes_are_grouped():
    """Stuff classes (road, sky) have no instances: the grouping and the baseline leave them alone."""
    instances, semantic = _discs()
    probs = oracle_probabilities(semantic, 3, 8)
    maps = ImageMaps(probs, oracle_transforms(instances, semantic, 3, 8), 8, semantic)
    for method in ("grouping", "connected_components"):
        found = find_instances(maps, tuple(semantic.shape), InstanceConfig(method=method), thing_classes=(1,))
        assert set(found.labels.tolist()) == {1}


# ------------------------------------------------------------------------------------------------
# Fragments of one object


def test_pixels_in_boxes_counts_like_a_loop():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(5, 13, 17, generator=generator) > 0.6
    masks[3] = False  # an empty mask
    masks[4, :, :9] = False  # a mask in one part of the image
    boxes = torch.tensor([[0.0, 0.0, 17.0, 13.0], [2.4, 1.6, 9.5, 7.5], [-5.0, -5.0, 3.0, 2.0], [8.0, 8.0, 8.2, 8.2],
                          [16.6, 12.6, 30.0, 30.0], [4.5, 3.5, 4.6, 3.6]])
    counts = pixels_in_boxes(masks, boxes)
    ys, xs = torch.meshgrid(torch.arange(13) + 0.5, torch.arange(17) + 0.5, indexing="ij")
    for b, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        inside = (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
        for k in range(5):
            assert counts[b, k] == (masks[k] & inside).sum(), (b, k)


def _box_of(mask: torch.Tensor) -> list[float]:
    ys, xs = mask.nonzero(as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def _split_object(height: int, width: int) -> tuple[torch.Tensor, ...]:
    """(whole, left, right, neighbour) (H, W) bool: a 10 x 10 object at rows / columns 2-11, its
    left and right pieces (split at column 7), and a 10 x 10 object touching it on the right."""
    whole = torch.zeros(height, width, dtype=torch.bool)
    whole[2:12, 2:12] = True
    left, right = whole.clone(), whole.clone()
    left[:, 7:], right[:, :7] = False, False
    neighbour = torch.zeros_like(whole)
    neighbour[2:12, 12:22] = True
    return whole, left, right, neighbour


def test_fragments_of_one_object_join_and_distinct_objects_do_not():
    whole, left, right, neighbour = _split_object(20, 30)  # the neighbour: same class
    small = torch.zeros_like(whole)
    small[18:20, 0:2] = True
    # the left piece's box is the object's; the right piece's votes over-estimate its size
    masks = torch.stack([left, right, neighbour, small, torch.zeros_like(whole)])
    boxes = torch.tensor([_box_of(whole), [0.0, 0.0, 14.0, 14.0], _box_of(neighbour), [0.0, 0.0, 30.0, 20.0],
                          [0.0, 0.0, 5.0, 5.0]])
    labels = torch.tensor([1, 1, 1, 1, 1])
    merged, keep = merge_fragments(masks, labels, boxes, 0.8)
    assert keep.tolist() == [True, False, True, True, False]  # right joins left; the empty mask goes
    assert torch.equal(merged[0], whole) and torch.equal(merged[2], neighbour)
    # the small object lies in the large box of cluster 3 only one way round: no merge either way
    assert torch.equal(merged[3], small)
    _, apart = merge_fragments(masks, labels, boxes, 0.0)
    assert apart.tolist() == [True, True, True, True, False]
    _, other_class = merge_fragments(masks, torch.tensor([1, 2, 1, 1, 1]), boxes, 0.8)
    assert other_class[1]


def test_pieces_of_different_classes_join_only_when_asked_and_only_when_they_are_pieces():
    whole, left, right, neighbour = _split_object(20, 40)  # the neighbour: another class, its own box
    runner_up = whole.clone()  # the same object's second-choice hypothesis (top_n 2): the same pixels
    masks = torch.stack([left, right, neighbour, runner_up])
    boxes = torch.tensor([_box_of(whole), _box_of(whole), _box_of(neighbour), _box_of(whole)])
    labels = torch.tensor([1, 2, 2, 3])
    # mean class probabilities (background, 1, 2, 3): the right piece is unsure between 1 and 2
    unsure = torch.tensor([[0.1, 0.6, 0.2, 0.1], [0.1, 0.4, 0.5, 0.0], [0.1, 0.0, 0.9, 0.0], [0.1, 0.4, 0.0, 0.5]])
    merged, keep = merge_fragments(masks, labels, boxes, 0.5, unsure)
    # left and right are disjoint pieces in each other's box: right (class 2) joins left (class 1);
    # the neighbour lies outside the object's box; the runner-up shares all of left's pixels
    assert keep.tolist() == [True, False, True, True]
    assert torch.equal(merged[0], whole) and torch.equal(merged[2], neighbour) and torch.equal(merged[3], whole)
    sure = unsure.clone()
    sure[1] = torch.tensor([0.1, 0.2, 0.7, 0.0])  # the right piece gives class 1 under half of class 2
    _, kept_apart = merge_fragments(masks, labels, boxes, 0.5, sure)
    assert kept_apart.tolist() == [True, True, True, True]
    _, by_class = merge_fragments(masks, labels, boxes, 0.5)
    assert by_class.tolist() == [True, True, True, True]
    _, one_class = merge_fragments(masks, torch.tensor([1, 1, 2, 3]), boxes, 0.5)
    assert one_class.tolist() == [True, False, True, True]


def test_grouping_joins_an_object_whose_class_map_splits_it_between_two_classes():
    """One 8 x 12 object: its left two thirds are called class 1, the rest class 2 (a close second
    to class 1), and every pixel votes for the object's box; one instance of class 1 comes back,
    or two pieces without ``merge_across_classes``."""
    height, width = 24, 28
    instance = torch.zeros(height, width, dtype=torch.long)
    instance[8:16, 8:20] = 1
    semantic = instance.clone()
    semantic[8:16, 16:20] = 2
    profile = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.4, 0.5]])  # class 2's piece is unsure
    probs = profile[semantic].permute(2, 0, 1)
    transforms = oracle_transforms(instance, (instance > 0).long(), num_classes=2, stride=1).repeat(2, 1, 1)
    ours = group_instances(probs, transforms, 1, (height, width), InstanceConfig())
    assert len(ours) == 1 and ours.labels.tolist() == [1] and torch.equal(ours.masks[0], instance == 1)
    apart = group_instances(probs, transforms, 1, (height, width), InstanceConfig(merge_across_classes=False))
    assert sorted(apart.labels.tolist()) == [1, 2]


def test_grouping_joins_an_object_split_by_its_votes():
    """One 8 x 8 object whose right part votes for a box twice too large (a noisy size estimate):
    NMS keeps two hypotheses (IoU 0.25), the paper's grouping returns two pieces, ours one."""
    height, width = 24, 24
    semantic = torch.zeros(height, width, dtype=torch.long)
    instance = torch.zeros(height, width, dtype=torch.long)
    semantic[8:16, 8:16], instance[8:16, 8:16] = 1, 1
    probs = torch.stack([(semantic == 0).float(), (semantic == 1).float()]) * 0.8 + 0.1
    transforms = oracle_transforms(instance, semantic, num_classes=2, stride=1)
    big = torch.zeros_like(instance)
    big[4:20, 4:20] = 1  # a 16 x 16 box around the same centre
    big_semantic = (big > 0).long()
    wrong = oracle_transforms(big, big_semantic, num_classes=2, stride=1)
    transforms[:, :, 12:] = wrong[:, :, 12:]
    paper = group_instances(probs, transforms, 1, (height, width), InstanceConfig(merge_fragments=0.0))
    ours = group_instances(probs, transforms, 1, (height, width), InstanceConfig())
    assert len(paper) == 2
    assert len(ours) == 1 and torch.equal(ours.masks[0], semantic == 1)

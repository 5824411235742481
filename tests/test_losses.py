"""Bootstrapped cross-entropy and bootstrapped box loss against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from bridgeseg.config import LossConfig
from bridgeseg.losses import SegmentationLoss, bootstrapped_box_loss, bootstrapped_cross_entropy, hard_pixel_mask
from bridgeseg.targets import SIZE_REFERENCE, box_targets


def logits_for(probabilities: list[float], labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits (1, 2, 1, P) whose ground-truth probability is exactly as given."""
    columns = []
    for p, y in zip(probabilities, labels):
        logit = math.log(p / (1 - p))  # softmax([logit, 0])[0] = p
        columns.append([logit, 0.0] if y == 0 else [0.0, logit])
    logits = torch.tensor(columns, dtype=torch.float64).T.reshape(1, 2, 1, -1)
    return logits, torch.tensor(labels).view(1, 1, -1)


P = [0.5, 0.75, 0.9, 0.2]
LABELS = [0, 1, 0, 1]


def nll(*ps: float) -> float:
    return sum(-math.log(p) for p in ps) / len(ps)


def test_threshold_keeps_pixels_below_t_normalised_by_their_number():
    logits, target = logits_for(P, LABELS)
    loss = bootstrapped_cross_entropy(logits, target, threshold=0.6, min_kept=1)
    assert loss.item() == pytest.approx(nll(0.5, 0.2))  # 0.5 and 0.2 are below 0.6


def test_min_kept_raises_the_threshold_when_too_few_are_hard():
    logits, target = logits_for(P, LABELS)
    loss = bootstrapped_cross_entropy(logits, target, threshold=0.6, min_kept=3)
    assert loss.item() == pytest.approx(nll(0.2, 0.5, 0.75))  # the 3 hardest


def test_no_threshold_keeps_exactly_the_k_hardest():
    logits, target = logits_for(P, LABELS)
    assert bootstrapped_cross_entropy(logits, target, threshold=None, min_kept=2).item() == pytest.approx(nll(0.2, 0.5))
    assert bootstrapped_cross_entropy(logits, target, threshold=None, min_kept=10).item() == pytest.approx(nll(*P))


def test_ignored_pixels_never_count():
    logits, target = logits_for(P, LABELS)
    target[0, 0, 3] = 255  # the hardest pixel (p = 0.2) becomes void
    loss = bootstrapped_cross_entropy(logits, target, threshold=0.6, min_kept=2)
    assert loss.item() == pytest.approx(nll(0.5, 0.75))
    assert bootstrapped_cross_entropy(logits, target, bootstrap=False).item() == pytest.approx(nll(0.5, 0.75, 0.9))


def test_plain_cross_entropy_is_bootstrapping_off():
    logits, target = logits_for(P, LABELS)
    plain = bootstrapped_cross_entropy(logits, target, bootstrap=False)
    assert plain.item() == pytest.approx(nll(*P))
    torch.testing.assert_close(plain, torch.nn.functional.cross_entropy(logits, target))


def test_min_kept_is_per_crop_and_normalisation_over_the_batch():
    first, target_a = logits_for([0.5, 0.75, 0.9, 0.95], [0, 0, 0, 0])
    second, target_b = logits_for([0.1, 0.3, 0.99, 0.99], [1, 1, 1, 1])
    logits, target = torch.cat([first, second]), torch.cat([target_a, target_b])
    # threshold 0.4: crop 1 has none below -> its 2 hardest (0.5, 0.75); crop 2 has 0.1 and 0.3
    loss = bootstrapped_cross_entropy(logits, target, threshold=0.4, min_kept=2)
    assert loss.item() == pytest.approx(nll(0.5, 0.75, 0.1, 0.3))


def test_gradient_reaches_only_kept_pixels():
    logits, target = logits_for(P, LABELS)
    logits.requires_grad_(True)
    bootstrapped_cross_entropy(logits, target, threshold=0.6, min_kept=1).backward()
    touched = logits.grad.abs().sum(dim=1).flatten() > 0
    assert touched.tolist() == [True, False, False, True]


def test_no_labelled_pixel_gives_zero_with_a_graph():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = bootstrapped_cross_entropy(logits, torch.full((1, 2, 2), 255), threshold=0.6, min_kept=4)
    assert loss.item() == 0.0
    loss.backward()


def test_hard_pixel_mask_counts():
    easiness = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.8]])
    valid = torch.tensor([[True, True, False, True, True]])
    assert hard_pixel_mask(easiness, valid, 0.4, 0).tolist() == [[False, True, False, True, False]]
    assert hard_pixel_mask(easiness, valid, None, 3).tolist() == [[False, True, False, True, True]]
    assert hard_pixel_mask(easiness, valid, 0.2, 2).tolist() == [[False, True, False, True, False]]


def _two_instances():
    """A 1 x 12 x 12 scene: instance 1 (class 1) is 2 x 2 pixels, instance 2 (class 2) is 4 x 6."""
    instance = torch.zeros(1, 12, 12, dtype=torch.long)
    semantic = torch.zeros(1, 12, 12, dtype=torch.long)
    instance[0, 1:3, 1:3], semantic[0, 1:3, 1:3] = 1, 1
    instance[0, 5:9, 4:10], semantic[0, 5:9, 4:10] = 2, 2
    return instance, semantic


def test_box_loss_each_instance_counts_equally():
    instance, semantic = _two_instances()
    targets = box_targets(instance, semantic, num_classes=3, stride=1, weighting="equal")
    prediction = torch.zeros(1, 8, 12, 12)
    prediction[:, 0:4] = targets.transforms  # class 1 channels: exact, so only instance 2 errs
    prediction[:, 4:8] = targets.transforms
    prediction[:, 4] += 0.5  # every pixel of instance 2: dy off by 0.5 -> smooth-L1 (beta 1) 0.5 * 0.5^2
    loss = bootstrapped_box_loss(prediction, targets.transforms, targets.boxes, targets.classes, targets.weights,
                                 stride=1, bootstrap=False)
    # weights 1/4 on the 4 pixels of instance 1 (loss 0) and 1/24 on the 24 of instance 2 (loss 0.125):
    # (0 + 24 * 0.125 / 24) / (1 + 1) = 0.0625 -- the two instances weigh the same despite 4 vs 24 pixels
    assert loss.item() == pytest.approx(0.0625)
    none = bootstrapped_box_loss(prediction, targets.transforms, targets.boxes, targets.classes,
                                 box_targets(instance, semantic, 3, 1, weighting="none").weights, 1, bootstrap=False)
    assert none.item() == pytest.approx(24 * 0.125 / 28)  # per-pixel: the large instance dominates


def test_box_loss_bootstrapping_drops_easy_pixels_by_iou():
    instance, semantic = _two_instances()
    targets = box_targets(instance, semantic, num_classes=3, stride=1, weighting="none")
    prediction = torch.zeros(1, 8, 12, 12)
    prediction[:, 0:4] = targets.transforms
    prediction[:, 4:8] = targets.transforms
    prediction[:, 6] += math.log(2.0)  # instance 2's boxes twice as tall: IoU 0.5, loss 0.5 * log(2)^2 each
    prediction[:, 0] += 0.01  # instance 1: a tiny offset, IoU ~0.99 (easy), loss 0.5 * 0.01^2
    args = (targets.transforms, targets.boxes, targets.classes, targets.weights, 1)
    hard_only = bootstrapped_box_loss(prediction, *args, iou_threshold=0.8, min_kept=0)
    assert hard_only.item() == pytest.approx(0.5 * math.log(2.0) ** 2, rel=1e-5)
    with_min = bootstrapped_box_loss(prediction, *args, iou_threshold=0.8, min_kept=26)  # 24 hard + 2 easiest-hard
    assert with_min.item() == pytest.approx((24 * 0.5 * math.log(2.0) ** 2 + 2 * 0.5 * 0.01 ** 2) / 26, rel=1e-5)


def test_box_loss_uses_the_pixel_s_own_class_channels():
    instance, semantic = _two_instances()
    targets = box_targets(instance, semantic, num_classes=3, stride=1)
    prediction = torch.zeros(1, 8, 12, 12)
    prediction[:, 0:4] = targets.transforms
    prediction[:, 4:8] = targets.transforms
    prediction[:, 0:4] += torch.where(semantic == 2, 100.0, 0.0)  # garbage in class-1 channels at class-2 pixels
    loss = bootstrapped_box_loss(prediction, targets.transforms, targets.boxes, targets.classes, targets.weights, 1,
                                 bootstrap=False)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_segmentation_loss_resolutions_and_warmup():
    torch.manual_seed(0)
    instance, semantic = _two_instances()
    semantic = semantic.repeat(2, 1, 1)
    batch = {"semantic": semantic, "instance": instance.repeat(2, 1, 1)}
    outputs = {"semantic": torch.randn(2, 3, 3, 3), "localization": torch.randn(2, 8, 3, 3) * 0.1}
    for resolution in ("label", "output"):
        loss = SegmentationLoss(LossConfig(resolution=resolution, min_kept=4), num_classes=3, output_stride=4)
        total, parts = loss(outputs, batch, step=0)
        assert set(parts) == {"semantic", "localization"}
        assert total.item() == pytest.approx(sum(parts.values()), rel=1e-6)
    # at the output stride the labels are sampled at pixels 0, 4, 8: label[::4, ::4]
    output_loss = SegmentationLoss(LossConfig(resolution="output", bootstrap=False), 3, output_stride=4)
    expected = torch.nn.functional.cross_entropy(outputs["semantic"], semantic[:, ::4, ::4])
    assert output_loss(outputs, batch)[1]["semantic"] == pytest.approx(expected.item(), rel=1e-6)
    # during warm-up the semantic loss is plain cross-entropy whatever the bootstrapping settings
    warm = SegmentationLoss(LossConfig(resolution="output", threshold=None, min_kept=1, warmup_iterations=10), 3, 4)
    assert warm(outputs, batch, step=5)[1]["semantic"] == pytest.approx(expected.item(), rel=1e-6)
    assert warm(outputs, batch, step=10)[1]["semantic"] != pytest.approx(expected.item(), rel=1e-6)


def _bilinear_twice_as_fine(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, size, size) written out: grid position j is output position j / 2,
    clamped at the last one, interpolated between its two neighbours in each direction."""
    h = maps.shape[-1]
    out = torch.zeros(*maps.shape[:2], size, size)
    for j in range(size):
        for i in range(size):
            y, x = min(j / 2, h - 1), min(i / 2, h - 1)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, h - 1)
            dy, dx = y - y0, x - x0
            out[..., j, i] = ((1 - dy) * (1 - dx) * maps[..., y0, x0] + (1 - dy) * dx * maps[..., y0, x1]
                              + dy * (1 - dx) * maps[..., y1, x0] + dy * dx * maps[..., y1, x1])
    return out


def test_loss_on_a_grid_twice_as_fine_as_the_outputs():
    torch.manual_seed(1)
    instance, semantic = _two_instances()
    batch = {"semantic": semantic.repeat(2, 1, 1), "instance": instance.repeat(2, 1, 1)}
    outputs = {"semantic": torch.randn(2, 3, 3, 3), "localization": torch.randn(2, 8, 3, 3) * 0.1}
    loss = SegmentationLoss(LossConfig(resolution="output_x2", bootstrap=False, box_bootstrap=False), 3,
                            output_stride=4)
    assert loss.stride == 2
    _, parts = loss(outputs, batch)
    # 12 x 12 labels at pixels 0, 2, ..., 10; the 3 x 3 outputs bilinearly on that 6 x 6 grid
    logits = _bilinear_twice_as_fine(outputs["semantic"], 6)
    expected = torch.nn.functional.cross_entropy(logits, batch["semantic"][:, ::2, ::2])
    assert parts["semantic"] == pytest.approx(expected.item(), rel=1e-5)
    targets = box_targets(batch["instance"], batch["semantic"], num_classes=3, stride=2)
    transforms = _bilinear_twice_as_fine(outputs["localization"], 6)
    expected_box = bootstrapped_box_loss(transforms, targets.transforms, targets.boxes, targets.classes,
                                         targets.weights, 2, bootstrap=False)
    assert parts["localization"] == pytest.approx(expected_box.item(), rel=1e-5)
    on_output_grid = SegmentationLoss(LossConfig(resolution="output", bootstrap=False, box_bootstrap=False), 3, 4)
    assert on_output_grid(outputs, batch)[1]["semantic"] != pytest.approx(parts["semantic"], rel=1e-3)


def test_size_reference_is_what_log_size_means():
    instance = torch.zeros(1, 70, 70, dtype=torch.long)
    instance[0, 0:64, 0:32] = 1
    targets = box_targets(instance, instance.clone(), num_classes=2, stride=1)
    assert targets.transforms[0, 2, 0, 0].item() == pytest.approx(math.log(64 / SIZE_REFERENCE))
    assert targets.transforms[0, 3, 0, 0].item() == pytest.approx(math.log(32 / SIZE_REFERENCE))

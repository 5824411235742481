"""Evaluation of a model (or of ground-truth "oracle" maps) on a dataset split.

Per image: class probabilities at the output stride, upsampled to the image for the semantic
prediction (confusion matrix); for models with a localization head, the grouping of
``grouping.py`` turns probabilities and transforms into instances (mAP^r).
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from ..config import EvalConfig, InstanceConfig
from ..data.instances import instances_from_maps
from ..evaluation.instance import InstanceEvaluator
from ..evaluation.semantic import SemanticEvaluator
from ..grouping import GroupingParams, group_instances
from ..inference import ImageMaps, predict_maps
from ..targets import box_targets

ORACLES = ("semantic", "localization", "both")


def oracle_probabilities(semantic: torch.Tensor, num_classes: int, stride: int) -> torch.Tensor:
    """One-hot class probabilities from a label map: (H, W) -> (C, h, w); void counts as background."""
    labels = semantic[::stride, ::stride].clone()
    labels[(labels < 0) | (labels >= num_classes)] = 0
    return torch.nn.functional.one_hot(labels, num_classes).permute(2, 0, 1).float()


def oracle_transforms(instance: torch.Tensor, semantic: torch.Tensor, num_classes: int, stride: int) -> torch.Tensor:
    """Ground-truth transform maps: (H, W) label maps -> (4 (C - 1), h, w); each pixel's own
    instance transform in its class's channels, zeros elsewhere."""
    targets = box_targets(instance[None], semantic[None], num_classes, stride)
    classes = targets.classes[0]
    h, w = classes.shape
    maps = torch.zeros(num_classes - 1, 4, h, w, device=instance.device)
    has_target = classes > 0
    index = (classes - 1).clamp(min=0)
    maps[index[has_target], :, *has_target.nonzero(as_tuple=True)] = targets.transforms[0].permute(1, 2, 0)[has_target]
    return maps.view(4 * (num_classes - 1), h, w)


def apply_oracle(maps: ImageMaps | None, oracle: str, semantic: torch.Tensor, instance: torch.Tensor,
                 num_classes: int, output_stride: int) -> ImageMaps:
    """Replace predicted maps by ground truth: ``semantic``, ``localization`` or ``both``.

    ``both`` needs no network and works at label resolution (stride 1), so that it tests the
    grouping alone; the single oracles use the network's grid.
    """
    if oracle == "both":
        return ImageMaps(oracle_probabilities(semantic, num_classes, 1),
                         oracle_transforms(instance, semantic, num_classes, 1), 1, semantic)
    if maps is None:
        raise ValueError(f"oracle {oracle!r} replaces only part of the maps and needs a model checkpoint")
    if oracle == "semantic":
        return ImageMaps(oracle_probabilities(semantic, num_classes, output_stride), maps.transforms, output_stride,
                         semantic)
    if oracle == "localization":
        if maps.probs is None:
            raise ValueError("--oracle localization needs a checkpoint with a semantic head")
        return ImageMaps(maps.probs, oracle_transforms(instance, semantic, num_classes, output_stride),
                         output_stride, maps.semantic)
    raise ValueError(f"unknown oracle {oracle!r}; choose one of {ORACLES}")


def evaluate_model(model: nn.Module | None, loader, class_names: tuple[str, ...], device: torch.device,
                   output_stride: int, instance_config: InstanceConfig | None = None, oracle: str | None = None,
                   progress: bool = True, description: str = "evaluating", eval_config=None) -> dict:
    """Semantic (and, with ``instance_config``, instance) metrics over ``loader``.

    Args:
        model: the network in eval mode, or None with ``oracle="both"``.
        loader: batches of one whole image (``evaluation_loader``) with ``semantic`` and, for
            instance evaluation, ``instance`` label maps.
        class_names: C names, background first.
        instance_config: grouping and protocol; None skips instance evaluation.
        oracle: None, ``semantic``, ``localization`` or ``both`` (see ``apply_oracle``).
        eval_config: multi-view testing and sliding window (``scales``, ``flip``, ``tile_size``,
            ``tile_overlap``); None = one whole view.

    Returns:
        ``{"semantic": {...}}`` plus ``"instance": {...}`` when instances are evaluated.
    """
    num_classes = len(class_names)
    semantic_evaluator = SemanticEvaluator(num_classes)
    instance_evaluator = InstanceEvaluator(list(class_names), instance_config.protocol) if instance_config else None
    params = GroupingParams.from_config(instance_config) if instance_config else None
    views = eval_config or EvalConfig()
    if model is not None:
        model.eval()
    for batch in tqdm(loader, desc=description, unit="img", disable=not progress, leave=False):
        semantic = batch["semantic"][0].to(device)
        maps = None
        if model is not None:
            maps = predict_maps(model, batch["image"].to(device), output_stride, views.scales, views.flip,
                                views.tile_size, views.tile_overlap)
        if oracle is not None:
            maps = apply_oracle(maps, oracle, semantic, batch["instance"][0].to(device), num_classes, output_stride)
        if maps.semantic is None:
            raise ValueError("this checkpoint has no semantic head: evaluate it with --oracle semantic "
                             "(ground-truth class maps) to score its instances")
        semantic_evaluator.process(maps.semantic, semantic)
        if instance_evaluator is not None:
            if maps.transforms is None:
                raise ValueError("instance evaluation needs a model with a localization head "
                                 "(model.arch localization needs --semantic-checkpoint, or use joint/separate)")
            found = group_instances(maps.probs, maps.transforms, maps.stride, tuple(semantic.shape), params)
            gt_masks, gt_labels, void = instances_from_maps(batch["instance"][0].to(device), semantic, num_classes)
            instance_evaluator.process(found.masks, found.labels, found.scores, gt_masks, gt_labels, void)
    # under torchrun every rank saw a shard of the images: combine the statistics
    semantic_evaluator.all_reduce()
    results = {"semantic": semantic_evaluator.evaluate()}
    if instance_evaluator is not None:
        instance_evaluator.all_gather()
        results["instance"] = instance_evaluator.evaluate()
    return results


def evaluate_config(config, checkpoint_path=None, oracle: str | None = None, device: str = "auto",
                    progress: bool = True) -> tuple[dict, tuple[str, ...]]:
    """Evaluate a checkpoint (or an oracle) on ``config``'s evaluation split.

    Instances are evaluated when the model has a localization head (or an oracle provides one).

    Returns:
        ``(results, class_names)`` with results ``{"semantic": {...}, "instance"?: {...}}``.
    """
    from ..data.loading import build_dataset, evaluation_loader
    from .checkpoint import load_trained_model
    from .distributed import resolve_device

    device = resolve_device(device if device != "auto" else config.train.device)
    model, output_stride = None, config.model.output_stride
    if checkpoint_path is not None:
        model, class_names, trained = load_trained_model(checkpoint_path, device)
        output_stride = trained.model.output_stride
        arch = trained.model.arch
    elif oracle == "both":
        arch = "joint"
    else:
        raise ValueError("evaluate needs --checkpoint (only --oracle both runs without a network)")
    instances = arch in ("joint", "separate") or (arch == "localization" and oracle == "semantic") or oracle == "both"
    if arch == "semantic" and oracle in ("localization",):
        raise ValueError("--oracle localization with a semantic-only checkpoint leaves no network output to use; "
                         "use --oracle both")
    split = config.eval.split or config.data.val_split
    dataset = build_dataset(config.data, split, with_instances=instances or oracle is not None)
    if checkpoint_path is None:
        class_names = dataset.class_names
    elif len(dataset.class_names) != len(class_names):
        raise ValueError(f"the checkpoint was trained on {len(class_names)} classes {list(class_names)} but the "
                         f"dataset at {config.data.root} has {len(dataset.class_names)}; point --data-root at a "
                         "dataset with the same classes")
    loader = evaluation_loader(config.data, dataset, limit=config.eval.max_images)
    results = evaluate_model(model, loader, class_names, device, output_stride,
                             config.instance if instances else None, oracle=oracle, progress=progress,
                             eval_config=config.eval)
    return results, class_names

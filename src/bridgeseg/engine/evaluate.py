"""Evaluation of a model (or of ground-truth "oracle" maps) on a dataset split.

Per image, the ``Predictor``'s two steps, exactly as ``bridgeseg predict`` runs them: the maps of
the test views (``predictor.maps``), scored as a class map (confusion matrix), and, when instances
are evaluated, ``find_instances`` on those maps (mAP^r). ``--oracle`` swaps maps for ground truth
in between (``bridgeseg.oracle``).
"""

from __future__ import annotations

import warnings

from tqdm import tqdm

from ..config import Config, InstanceConfig
from ..data.instances import instances_from_maps
from ..data.loading import build_dataset, evaluation_loader
from ..distributed import resolve_device
from ..evaluation.instance import InstanceEvaluator
from ..evaluation.semantic import SemanticEvaluator
from ..oracle import ORACLES, apply_oracle
from ..predictor import Predictor, find_instances


def evaluate_model(predictor: Predictor | None, loader, class_names: tuple[str, ...],
                   instance_config: InstanceConfig | None = None, protocol: str = "sds", oracle: str | None = None,
                   progress: bool = True, description: str = "evaluating") -> dict:
    """Semantic (and, with ``instance_config``, instance) metrics over ``loader``.

    Args:
        predictor: the network and its test views, or None with ``oracle="both"``.
        loader: batches of one whole image (``evaluation_loader``): ``image`` (1, H, W, 3) uint8,
            ``semantic`` and, for instance evaluation, ``instance`` label maps.
        class_names: C names, background first.
        instance_config: the grouping settings (normally ``predictor.instance_config``); None skips
            instance evaluation.
        protocol: the mAP^r matching protocol (``eval.protocol``).
        oracle: None, ``semantic``, ``localization`` or ``both`` (see ``bridgeseg.oracle``).

    Returns:
        ``{"semantic": {...}}`` plus ``"instance": {...}`` when instances are evaluated.
    """
    num_classes = len(class_names)
    semantic_evaluator = SemanticEvaluator(num_classes)
    instance_evaluator = InstanceEvaluator(list(class_names), protocol) if instance_config else None
    device = predictor.device if predictor is not None else "cpu"
    for batch in tqdm(loader, desc=description, unit="img", disable=not progress, leave=False):
        semantic = batch["semantic"][0].to(device)
        maps = predictor.maps(batch["image"])[0] if predictor is not None else None
        if oracle is not None:
            maps = apply_oracle(maps, oracle, semantic, batch["instance"][0].to(device), num_classes,
                                predictor.output_stride if predictor is not None else 1)
        if maps.semantic is None:
            raise ValueError("this checkpoint has no semantic head: evaluate it with --oracle semantic "
                             "(ground-truth class maps) to score its instances")
        semantic_evaluator.process(maps.semantic, semantic)
        if instance_evaluator is not None:
            if maps.transforms is None:
                raise ValueError("instance evaluation needs a model with a localization head (model.arch joint or "
                                 "separate), or --oracle localization / both")
            found = find_instances(maps, tuple(semantic.shape), instance_config)
            gt_masks, gt_labels, void = instances_from_maps(batch["instance"][0].to(device), semantic, num_classes)
            instance_evaluator.process(found.masks, found.labels, found.scores, gt_masks, gt_labels, void)
    # under torchrun every rank saw a shard of the images: combine the statistics
    semantic_evaluator.all_reduce()
    results = {"semantic": semantic_evaluator.evaluate()}
    if oracle is not None:
        results["oracle"] = oracle  # ground truth replaced part of the maps: say so beside the numbers
    if instance_evaluator is not None:
        instance_evaluator.all_gather()
        results["instance"] = instance_evaluator.evaluate()
    return results


def _evaluated_heads(heads: tuple[str, ...], oracle: str | None, method: str) -> bool:
    """Whether instances can be evaluated with these network heads, this oracle and this
    ``instance.method`` (connected components need class maps only)."""
    if oracle is not None and oracle not in ORACLES:
        raise ValueError(f"unknown oracle {oracle!r}; choose one of {ORACLES}")
    if oracle == "localization" and "semantic" not in heads:
        raise ValueError("--oracle localization with a checkpoint that has no semantic head leaves no network "
                         "output to use; use --oracle both")
    if oracle == "both":
        return True
    has_classes = "semantic" in heads or oracle == "semantic"
    return has_classes and ("localization" in heads or oracle == "localization" or method == "connected_components")


def check_dataset_classes(checkpoint_classes: tuple[str, ...], dataset_classes: tuple[str, ...], root) -> None:
    """Refuse a dataset with another number of classes than the checkpoint's; warn, with both lists,
    when they have other names (label value i is then scored as the checkpoint's class i)."""
    checkpoint_classes, dataset_classes = list(checkpoint_classes), list(dataset_classes)
    if len(dataset_classes) != len(checkpoint_classes):
        raise ValueError(f"the checkpoint was trained on {len(checkpoint_classes)} classes {checkpoint_classes} but "
                         f"the dataset at {root} has {len(dataset_classes)} {dataset_classes}; point --data-root at a "
                         "dataset with the same classes")
    if dataset_classes != checkpoint_classes:
        warnings.warn(f"the checkpoint was trained on the classes {checkpoint_classes} but the dataset at {root} has "
                      f"{dataset_classes}: its label value i is scored as the checkpoint's class i. Point --data-root "
                      "at the dataset the checkpoint was trained for, or fix its classes.txt", UserWarning, stacklevel=3)


def evaluate_config(config: Config, checkpoint_path=None, oracle: str | None = None, device: str = "auto",
                    progress: bool = True) -> tuple[dict, tuple[str, ...]]:
    """Evaluate a checkpoint (or an oracle) on ``config``'s evaluation split.

    The network comes from the checkpoint (or a semantic and a localization checkpoint trained
    apart: a list of two paths); the test-time settings (``eval``, ``instance``) and the data from
    ``config``. Instances are evaluated when the model has a localization head (or an
    oracle provides the maps).

    Returns:
        ``(results, class_names)`` with results ``{"semantic": {...}, "instance"?: {...}}``.
    """
    device = resolve_device(device if device != "auto" else config.train.device)
    predictor, heads = None, ()
    if checkpoint_path is not None:
        predictor = Predictor.from_checkpoint(checkpoint_path, device, eval_config=config.eval,
                                              instance_config=config.instance)
        class_names, heads = predictor.class_names, tuple(predictor.model.heads)
    elif oracle != "both":
        raise ValueError("evaluate needs --checkpoint (only --oracle both runs without a network)")
    with_instances = _evaluated_heads(heads, oracle, config.instance.method)
    dataset = build_dataset(config.data, config.evaluation_split, with_instances=with_instances or oracle is not None)
    if predictor is None:
        class_names = dataset.class_names
    else:
        check_dataset_classes(class_names, dataset.class_names, config.data.root)
    loader = evaluation_loader(config.data, dataset, limit=config.eval.max_images)
    results = evaluate_model(predictor, loader, class_names, config.instance if with_instances else None,
                             config.eval.protocol, oracle=oracle, progress=progress)
    return results, class_names

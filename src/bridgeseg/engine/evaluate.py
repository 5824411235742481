"""Evaluation of a model (or of ground-truth "oracle" maps) on a dataset split.

Per image, the ``Predictor``'s two steps, exactly as ``bridgeseg predict`` runs them: the maps of
the test views (``predictor.maps``), scored as a class map (confusion matrix), and, when instances
are evaluated, ``find_instances`` on those maps (mAP^r; PQ of the panoptic maps made from both;
on Cityscapes the official AP). ``--oracle`` swaps maps for ground truth in between
(``bridgeseg.oracle``). With a ``Gallery`` every image also gets its thumbnails and row of
numbers in ``report.html`` (``write_reports``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import Config, InstanceConfig
from ..data.cityscapes import read_instance_ids
from ..data.loading import build_dataset, evaluation_loader
from ..distributed import resolve_device
from ..html_report import Gallery, write_html_report
from ..oracle import ORACLES, apply_oracle
from ..panoptic import DEFAULT_MIN_AREA
from ..predictor import Predictor, find_instances
from ..report import write_evaluation_report
from ..visualize import plot_training_curves
from .scorers import CityscapesScorer, ImageOutcome, InstanceScorer, PanopticScorer, SemanticScorer


def _outcome(predictor: Predictor | None, batch: dict, device, oracle: str | None, num_classes: int,
             instance_config: InstanceConfig | None, thing_classes: tuple[int, ...] | None) -> ImageOutcome:
    """One batch (one image) through the maps, the oracle and the grouping."""
    semantic = batch["semantic"][0].to(device)
    instance = batch["instance"][0].to(device) if "instance" in batch else None
    maps = predictor.maps(batch["image"])[0] if predictor is not None else None
    if oracle is not None:
        maps = apply_oracle(maps, oracle, semantic, instance, num_classes,
                            predictor.output_stride if predictor is not None else 1)
    if maps.semantic is None:
        raise ValueError("this checkpoint has no semantic head: evaluate it with --oracle semantic "
                         "(ground-truth class maps) to score its instances")
    found = None
    if instance_config is not None:
        if maps.transforms is None and instance_config.method == "grouping":
            raise ValueError("instance evaluation needs a model with a localization head (model.arch joint or "
                             "separate), or --oracle localization / both, or instance.method=connected_components")
        found = find_instances(maps, tuple(semantic.shape), instance_config, thing_classes)
    return ImageOutcome(batch["name"][0], semantic, instance, maps, found)


def _scorers(class_names: tuple[str, ...], instance_config, protocol: str, thing_classes, panoptic_min_area: int,
             instance_ids) -> list:
    scorers: list = [SemanticScorer(len(class_names))]
    if instance_config is not None:
        scorers.append(InstanceScorer(class_names, protocol))
        if thing_classes is not None:
            scorers.append(PanopticScorer(class_names, tuple(thing_classes), panoptic_min_area))
        if instance_ids is not None:
            scorers.append(CityscapesScorer(instance_ids))
    return scorers


def _add_to_gallery(gallery: Gallery, batch: dict, outcome: ImageOutcome, stats: dict) -> None:
    found = outcome.found_arrays()[0] if outcome.found is not None else None
    gallery.add(outcome.name, batch["image"][0].numpy(), outcome.semantic.cpu().numpy(),
                outcome.maps.semantic.cpu().numpy(),
                None if outcome.instance is None else outcome.instance.cpu().numpy(), found, stats)


def evaluate_model(predictor: Predictor | None, loader, class_names: tuple[str, ...],
                   instance_config: InstanceConfig | None = None, protocol: str = "sds", oracle: str | None = None,
                   progress: bool = True, description: str = "evaluating", *,
                   thing_classes: tuple[int, ...] | None = None, panoptic_min_area: int = DEFAULT_MIN_AREA,
                   instance_ids: Callable[[str], np.ndarray] | None = None, gallery: Gallery | None = None) -> dict:
    """Semantic (and, with ``instance_config``, instance and panoptic) metrics over ``loader``.

    Args:
        predictor: the network and its test views, or None with ``oracle="both"``.
        loader: batches of one whole image (``evaluation_loader``): ``image`` (1, H, W, 3) uint8,
            ``semantic`` and, for instance evaluation, ``instance`` label maps; ``name``.
        class_names: C names, background first.
        instance_config: the grouping settings (normally ``predictor.instance_config``); None skips
            instance evaluation.
        protocol: the mAP^r matching protocol (``eval.protocol``).
        oracle: None, ``semantic``, ``localization`` or ``both`` (see ``bridgeseg.oracle``).
        thing_classes: the dataset's thing classes, the only ones grouped into instances; with
            instances, also PQ (``bridgeseg.panoptic``, segments of at least ``panoptic_min_area``
            pixels). None: every foreground class is a thing, and no PQ.
        instance_ids: image id -> raw Cityscapes instance ids: with instances, also the official
            Cityscapes AP.
        gallery: where each image's thumbnails and numbers go (``report.html``), or None.

    Returns:
        ``{"semantic": {...}}`` plus ``"instance"``, ``"panoptic"``, ``"cityscapes"`` when evaluated.
    """
    scorers = _scorers(class_names, instance_config, protocol, thing_classes, panoptic_min_area, instance_ids)
    device = predictor.device if predictor is not None else "cpu"
    for batch in tqdm(loader, desc=description, unit="img", disable=not progress, leave=False):
        outcome = _outcome(predictor, batch, device, oracle, len(class_names), instance_config, thing_classes)
        stats: dict = {}
        for scorer in scorers:
            stats.update(scorer.process(outcome))
        if gallery is not None:
            _add_to_gallery(gallery, batch, outcome, stats)
    # under torchrun every rank saw a shard of the images: each scorer combines the statistics
    results = {scorer.key: scorer.finish() for scorer in scorers}
    if oracle is not None:
        results["oracle"] = oracle  # ground truth replaced part of the maps: say so beside the numbers
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
                    progress: bool = True, gallery: Gallery | None = None) -> tuple[dict, tuple[str, ...]]:
    """Evaluate a checkpoint (or an oracle) on ``config``'s evaluation split.

    The network comes from the checkpoint (or a semantic and a localization checkpoint trained
    apart: a list of two paths); the test-time settings (``eval``, ``instance``) and the data from
    ``config``. Instances are evaluated when the model has a localization head (or an oracle
    provides the maps); then also PQ (with the dataset's thing classes) and, on Cityscapes, the
    official AP. ``gallery``: where each image's thumbnails and numbers go, for ``write_reports``.

    Returns:
        ``(results, class_names)`` with results ``{"semantic": {...}, "instance"?, "panoptic"?, "cityscapes"?}``.
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
    device_type = predictor.device.type if predictor is not None else "cpu"
    loader = evaluation_loader(config.data, dataset, limit=config.eval.max_images, device_type=device_type)
    instance_ids = None
    if config.data.dataset == "cityscapes" and with_instances:
        def instance_ids(name: str) -> np.ndarray:
            return read_instance_ids(dataset.instance_path(name))
    results = evaluate_model(predictor, loader, class_names, config.instance if with_instances else None,
                             config.eval.protocol, oracle=oracle, progress=progress,
                             thing_classes=dataset.thing_classes, panoptic_min_area=config.eval.panoptic_min_area,
                             instance_ids=instance_ids, gallery=gallery)
    return results, class_names


def write_reports(results: dict, class_names: tuple[str, ...], out_dir: str | Path, rows: list[dict],
                  title: str, checkpoint: str | Path | None = None, curves: str | Path | None = None) -> Path:
    """Everything of ``--report DIR``: ``report.html`` (with the gallery ``rows``), ``report.md``,
    ``metrics.json``, ``class_scores.png`` and ``curves.png``, the training curves of the run that
    wrote ``checkpoint`` (from ``metrics.jsonl`` beside it; or a ready ``curves`` picture).
    Returns the path of ``report.html``."""
    out_dir = Path(out_dir)
    write_evaluation_report(results, class_names, out_dir, title=title)
    training_log = Path(checkpoint).parent / "metrics.jsonl" if checkpoint is not None else None
    if curves is None and training_log is not None and training_log.is_file():
        curves = plot_training_curves(training_log, out_dir / "curves.png")
    pictures = {"per-class scores": out_dir / "class_scores.png", "training curves": curves}
    return write_html_report(out_dir, results, class_names, rows, title=title, pictures=pictures)

"""Predicting many images into files: ``bridgeseg predict`` (image files) and ``bridgeseg
predict-dataset`` (a dataset split, in a format other tools read). Both run the ``Predictor`` and
write with ``bridgeseg.outputs``.
"""

from __future__ import annotations

import glob
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from ..config import Config
from ..data.cityscapes import train_ids_to_label_ids
from ..data.io import read_image
from ..data.loading import build_dataset
from ..files import check_output_folder, writing
from ..outputs import (FORMATS, PANOPTIC_FORMATS, CocoResults, PanopticFiles, panoptic_categories,
                       write_cityscapes_prediction, write_prediction, write_voc_prediction)
from ..panoptic import panoptic_from_prediction
from ..predictor import Predictor
from .evaluate import check_dataset_classes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------------
# Image files (bridgeseg predict)
# ----------------------------------------------------------------------------------------------

@dataclass
class PredictSummary:
    """What ``predict_files`` did.

    Attributes:
        images: images predicted and written.
        failed: ``(path, reason)`` of every image that could not be read (skipped).
        instances_per_class: class name -> instances found over all images.
        out_dir: the output folder.
    """

    images: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    instances_per_class: dict[str, int] = field(default_factory=dict)
    out_dir: str = ""

    @property
    def instances(self) -> int:
        return sum(self.instances_per_class.values())

    def format(self) -> str:
        """A short plain-text summary: counts, a per-class instance table, the failures."""
        lines = [f"{self.images} images predicted, {len(self.failed)} failed, {self.instances} instances"
                 + (f" -> {self.out_dir}" if self.out_dir else "")]
        if self.instances_per_class:
            width = max(8, *(len(name) for name in self.instances_per_class)) + 2
            lines += [f"{'class':<{width}}{'instances':>10}", "-" * (width + 10)]
            lines += [f"{name:<{width}}{count:>10}" for name, count in self.instances_per_class.items()]
        if self.failed:
            lines.append("failed (skipped):")
            lines += [f"  {path}: {reason}" for path, reason in self.failed]
        return "\n".join(lines)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders (their images, sorted) and glob patterns -> image paths, duplicates removed.

    Raises:
        FileNotFoundError naming every input that matches nothing (or a folder without images).
    """
    found: list[Path] = []
    unmatched = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(p for p in path.iterdir() if _is_image(p))
        else:
            matches = sorted(p for p in map(Path, glob.glob(str(item), recursive=True)) if _is_image(p))
        if not matches:
            unmatched.append(str(item))
        found += matches
    if unmatched:
        raise FileNotFoundError(f"no image found for input(s) {unmatched}: give image files, folders of images "
                                f"({' '.join(IMAGE_EXTENSIONS)}) or glob patterns such as 'photos/*.jpg'")
    seen, unique = set(), []
    for path in found:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def _output_stems(paths: list[Path]) -> list[str]:
    """A distinct output stem per image: its file stem, ``-2``, ``-3``... on collisions."""
    used: Counter = Counter()
    stems = []
    for path in paths:
        used[path.stem] += 1
        stems.append(path.stem if used[path.stem] == 1 else f"{path.stem}-{used[path.stem]}")
    return stems


def predict_files(predictor: Predictor, inputs: Sequence[str | Path], out_dir: str | Path,
                  progress: bool = True) -> PredictSummary:
    """Predict every image of ``inputs`` and write its files into ``out_dir``.

    Args:
        predictor: a ``Predictor``.
        inputs: image files, folders (images inside, sorted) and glob patterns.
        out_dir: created if needed; per image ``<stem>_semantic.png`` (palette PNG of class
            indices), ``<stem>_instances.png`` (ids 1..K, 0 elsewhere; 16-bit if K > 255),
            ``<stem>.json`` (image size, class names, instances with RLE masks) and
            ``<stem>_overlay.png``.
        progress: show a progress bar.

    Returns:
        A ``PredictSummary``. An image that cannot be read is reported (a warning line naming it)
        and skipped; the run goes on.

    Raises:
        FileNotFoundError: an input matches no image.
    """
    paths = expand_inputs(inputs)
    out = check_output_folder(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out_dir=str(out))
    counts: Counter = Counter()
    bar = tqdm(list(zip(paths, _output_stems(paths))), desc="predicting", unit="img", disable=not progress)
    for path, stem in bar:
        try:
            image = read_image(path)
        except (ValueError, OSError) as error:
            summary.failed.append((str(path), str(error)))
            tqdm.write(f"warning: skipping {path}: {error}", file=sys.stderr)
            continue
        prediction = predictor(image)
        kept = f"the files of {summary.images} earlier image{'s' * (summary.images != 1)} are kept"
        with writing(f"the prediction files of {path} into {out}", kept):
            write_prediction(out, stem, image, prediction, source=str(path))
        summary.images += 1
        if prediction.instances is not None:
            counts.update(prediction.class_names[label] for label in prediction.instances.labels.tolist())
    summary.instances_per_class = {name: counts[name] for name in predictor.class_names[1:] if counts[name]}
    return summary


# ----------------------------------------------------------------------------------------------
# A dataset split (bridgeseg predict-dataset)
# ----------------------------------------------------------------------------------------------

def _panoptic_files(fmt: str, out_dir: Path, split: str, dataset) -> PanopticFiles:
    """The writer of ``cityscapes-panoptic`` (category ids = Cityscapes label ids, the layout of
    cityscapesscripts' ``cityscapes_panoptic_<split>.json``) or ``coco-panoptic`` (category ids =
    class indices, ``panoptic_<split>.json``)."""
    split_name = Path(split).stem if "/" in split or split.endswith(".txt") else split
    indices = np.arange(dataset.num_classes)
    if fmt == "cityscapes-panoptic":
        category_ids, name = train_ids_to_label_ids(indices), f"cityscapes_panoptic_{split_name}"
    else:
        category_ids, name = indices, f"panoptic_{split_name}"
    categories = panoptic_categories(dataset.class_names, dataset.thing_classes, category_ids)
    return PanopticFiles(out_dir, name, categories, category_ids)


def _add_panoptic(files: PanopticFiles, fmt: str, name: str, prediction, dataset, min_area: int) -> None:
    instances = prediction.instances
    if instances is None:
        raise ValueError("panoptic output needs instances: use a checkpoint with a localization head")
    panoptic = panoptic_from_prediction(prediction.semantic, instances.masks.numpy(), instances.labels.numpy(),
                                        instances.scores.numpy(), dataset.thing_classes, dataset.num_classes,
                                        min_area)
    if fmt == "cityscapes-panoptic":
        stem = Path(name).name.removesuffix("_leftImg8bit")
        files.add(stem, f"{stem}_gtFine_panoptic.png", panoptic)
    else:
        files.add(name, f"{name.replace('/', '_')}.png", panoptic)


def predict_dataset(config: Config, checkpoint: str | Path, out_dir: str | Path, fmt: str, split: str | None = None,
                    device: str = "auto", progress: bool = True) -> Path:
    """Predict every image of ``split`` (default: the evaluation split) and write them as ``fmt``.

    The network comes from ``checkpoint``, the test-time settings (``eval``, ``instance``) from
    ``config``, as in ``evaluate``; panoptic maps follow ``bridgeseg.panoptic``'s rule with
    ``eval.panoptic_min_area``. Returns the folder, or the JSON file of ``coco`` and the panoptic
    formats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if fmt.startswith("cityscapes") and config.data.dataset != "cityscapes":
        raise ValueError(f"--format {fmt} writes Cityscapes label ids and needs data.dataset=cityscapes")
    out_dir = check_output_folder(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, eval_config=config.eval,
                                          instance_config=config.instance)
    split = split or config.evaluation_split
    dataset = build_dataset(config.data, split)
    check_dataset_classes(predictor.class_names, dataset.class_names, config.data.root)
    coco = CocoResults() if fmt == "coco" else None
    panoptic = _panoptic_files(fmt, out_dir, split, dataset) if fmt in PANOPTIC_FORMATS else None
    for index in tqdm(range(len(dataset)), desc=f"predicting ({fmt})", unit="img", disable=not progress):
        name = dataset.ids[index]
        prediction = predictor(dataset.image_path(name))  # the image only: labels are not needed here
        if panoptic is not None:
            _add_panoptic(panoptic, fmt, name, prediction, dataset, config.eval.panoptic_min_area)
            continue
        instances = prediction.instances
        masks = instances.masks.numpy() if instances is not None else None
        labels = instances.labels.numpy() if instances is not None else None
        scores = instances.scores.numpy() if instances is not None else None
        if fmt == "voc":
            write_voc_prediction(out_dir, name, prediction.semantic, masks, labels, scores)
        elif fmt == "cityscapes":
            write_cityscapes_prediction(out_dir, name, prediction.semantic, masks, labels, scores)
        elif masks is not None:
            coco.add(name, prediction.image_size, masks, labels, scores)
        else:
            coco.add(name, prediction.image_size, np.zeros((0, *prediction.image_size), bool), [], [])
    if panoptic is not None:
        return panoptic.write()
    if coco is not None:
        return coco.write(out_dir, predictor.class_names)
    return out_dir

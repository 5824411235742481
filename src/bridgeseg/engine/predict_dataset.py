"""``bridgeseg predict-dataset``: the predictions of a whole split, in a format other tools read.

``voc``: ``OUT/<id>.png`` palette PNGs of class indices (the VOC server's format) and, for models
with a localization head, ``OUT/instances/<id>.txt`` + masks; ``cityscapes``:
``OUT/<stem>_labelIds.png`` in Cityscapes label ids and ``OUT/<stem>.txt`` + masks in label ids (the
official evaluators' inputs); ``coco``: ``OUT/results.json`` (RLE masks) + ``OUT/images.json``.
``bridgeseg score semantic`` / ``score instance`` read the voc and cityscapes files back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import Config
from ..data.loading import build_dataset
from ..formats import FORMATS, CocoResults, write_cityscapes_prediction, write_voc_prediction
from ..inference import Predictor


def predict_dataset(config: Config, checkpoint: str | Path, out_dir: str | Path, fmt: str, split: str | None = None,
                    device: str = "auto", progress: bool = True) -> Path:
    """Predict every image of ``split`` (default: the evaluation split) and write them as ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")
    if fmt == "cityscapes" and config.data.dataset != "cityscapes":
        raise ValueError("--format cityscapes writes Cityscapes label ids and needs data.dataset=cityscapes")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, scales=config.eval.scales, flip=config.eval.flip,
                                          tile_size=config.eval.tile_size, tile_overlap=config.eval.tile_overlap,
                                          instance_config=config.instance)
    dataset = build_dataset(config.data, split or config.eval.split or config.data.val_split)
    if dataset.num_classes != len(predictor.class_names):
        raise ValueError(f"the checkpoint has {len(predictor.class_names)} classes, the dataset "
                         f"{dataset.num_classes}; point --data-root at a dataset with the same classes")
    coco = CocoResults() if fmt == "coco" else None
    for index in tqdm(range(len(dataset)), desc=f"predicting ({fmt})", unit="img", disable=not progress):
        name = dataset.ids[index]
        prediction = predictor(dataset.image_path(name))  # the image only: labels are not needed here
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
    if coco is not None:
        return coco.write(out_dir, predictor.class_names)
    return out_dir

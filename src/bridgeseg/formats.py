"""Prediction files that other tools read, and reading them back.

Instance predictions use the Cityscapes results convention: one ``<image stem>.txt`` per image,
one line per instance, ``<mask png path relative to the txt> <class id> <score>``; a mask is the
non-zero pixels of its PNG. An image with no instance has an empty ``.txt``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


def write_instance_txt(txt_path: str | Path, masks: np.ndarray, class_ids, scores, mask_folder: str = "masks") -> Path:
    """Write one image's instances: masks (K, H, W) bool as 0/255 PNGs beside the ``.txt``."""
    txt_path = Path(txt_path)
    (txt_path.parent / mask_folder).mkdir(parents=True, exist_ok=True)
    lines = []
    for index, (mask, class_id, score) in enumerate(zip(np.asarray(masks), class_ids, scores)):
        relative = f"{mask_folder}/{txt_path.stem}_{index:03d}.png"
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(txt_path.parent / relative)
        lines.append(f"{relative} {int(class_id)} {float(score):.6f}")
    txt_path.write_text("".join(line + "\n" for line in lines))
    return txt_path


def read_instance_txt(txt_path: str | Path, image_size: tuple[int, int] | None = None):
    """Read one image's instance predictions.

    Args:
        txt_path: the ``.txt`` file.
        image_size: (H, W) every mask must have, if given.

    Returns:
        ``(masks (K, H, W) bool, class_ids (K,) int64, scores (K,) float64)``.

    Raises:
        FileNotFoundError / ValueError naming the file and line: a malformed line, a class id that
        is not an integer, a score that is not a finite number, a missing or unreadable mask, a
        mask of the wrong size.
    """
    txt_path = Path(txt_path)
    if not txt_path.is_file():
        raise FileNotFoundError(f"prediction file {txt_path} does not exist (write an empty file for an image "
                                "without detections)")
    masks, class_ids, scores = [], [], []
    for number, line in enumerate(txt_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{txt_path}, line {number}"
        parts = line.split()
        if len(parts) != 3:
            raise ValueError(f"{where}: expected '<mask png> <class id> <score>', got {line!r}")
        mask_name, class_text, score_text = parts
        try:
            class_id = int(class_text)
        except ValueError:
            raise ValueError(f"{where}: class id {class_text!r} is not an integer") from None
        try:
            score = float(score_text)
        except ValueError:
            raise ValueError(f"{where}: score {score_text!r} is not a number") from None
        if not math.isfinite(score):
            raise ValueError(f"{where}: score {score_text!r} is not finite")
        mask_path = txt_path.parent / mask_name
        try:
            with Image.open(mask_path) as image:
                mask = np.asarray(image.convert("L")) > 0 if image.mode not in ("I", "I;16") else np.asarray(image) > 0
        except FileNotFoundError:
            raise FileNotFoundError(f"{where}: mask file {mask_path} does not exist") from None
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"{where}: mask file {mask_path} is not a readable PNG ({error})") from error
        if image_size is not None and mask.shape != tuple(image_size):
            raise ValueError(f"{where}: mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, the image is "
                             f"{image_size[1]}x{image_size[0]}")
        masks.append(mask)
        class_ids.append(class_id)
        scores.append(score)
    shape = tuple(image_size) if image_size is not None else (masks[0].shape if masks else (0, 0))
    stacked = np.stack(masks) if masks else np.zeros((0, *shape), dtype=bool)
    return stacked, np.array(class_ids, dtype=np.int64), np.array(scores, dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# Whole-dataset prediction files (``bridgeseg predict-dataset``)

FORMATS = ("voc", "cityscapes", "coco")


def write_voc_prediction(out_dir: Path, name: str, semantic: np.ndarray, masks: np.ndarray | None,
                         class_ids, scores) -> None:
    """VOC server format: ``OUT/<id>.png`` palette PNG of class indices; instances, when given, as
    ``OUT/instances/<id>.txt`` + masks (what ``bridgeseg score instance --gt-format voc`` reads)."""
    from .data.io import write_label

    write_label(out_dir / f"{name}.png", semantic)
    if masks is not None:
        write_instance_txt(out_dir / "instances" / f"{name}.txt", masks, class_ids, scores)


def write_cityscapes_prediction(out_dir: Path, name: str, semantic_train_ids: np.ndarray, masks: np.ndarray | None,
                                train_class_ids, scores) -> None:
    """Cityscapes evaluator format: ``OUT/<stem>_labelIds.png`` (8-bit label ids, not train ids) and,
    with instances, ``OUT/<stem>.txt`` lines ``masks/<stem>_NNN.png <label id> <score>``."""
    from .data.cityscapes import train_ids_to_label_ids

    stem = Path(name).name.removesuffix("_leftImg8bit")
    out_dir.mkdir(parents=True, exist_ok=True)
    label_ids = train_ids_to_label_ids(semantic_train_ids).astype(np.uint8)
    Image.fromarray(label_ids).save(out_dir / f"{stem}_labelIds.png")
    if masks is not None:
        label_class_ids = train_ids_to_label_ids(np.asarray(train_class_ids, dtype=np.int64))
        write_instance_txt(out_dir / f"{stem}.txt", masks, label_class_ids, scores)


class CocoResults:
    """Accumulates COCO instance-segmentation results (RLE masks via pycocotools) and writes
    ``results.json`` (a list of {image_id, category_id, segmentation, score}) and ``images.json``
    (image_id -> file name), with category ids = the dataset's class ids."""

    def __init__(self) -> None:
        try:
            from pycocotools import mask as mask_utils
        except ImportError as error:
            raise ImportError("--format coco needs pycocotools: pip install pycocotools") from error
        self._encode = mask_utils.encode
        self.results: list[dict] = []
        self.images: list[dict] = []

    def add(self, name: str, size: tuple[int, int], masks: np.ndarray, class_ids, scores) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": name, "height": int(size[0]), "width": int(size[1])})
        for mask, class_id, score in zip(masks, class_ids, scores):
            rle = self._encode(np.asfortranarray(mask.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            self.results.append({"image_id": image_id, "category_id": int(class_id), "segmentation": rle,
                                 "score": round(float(score), 6)})

    def write(self, out_dir: Path, class_names: tuple[str, ...]) -> Path:
        import json

        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "images.json").write_text(json.dumps({
            "images": self.images,
            "categories": [{"id": index, "name": name} for index, name in enumerate(class_names) if index > 0]}))
        path = out_dir / "results.json"
        path.write_text(json.dumps(self.results))
        return path

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

"""Every on-disk prediction format: writing it, and reading back what the scorers read.

* Per image (``bridgeseg predict``): ``<stem>_semantic.png`` (palette PNG of class indices),
  ``<stem>_instances.png`` (ids 1..K, 16-bit above 255), ``<stem>.json`` (``prediction_record``:
  class names and per instance class, score, box, area and COCO RLE mask) and
  ``<stem>_overlay.png``.
* Per dataset (``bridgeseg predict-dataset``, ``FORMATS``): ``voc`` (``OUT/<id>.png`` + instance
  ``.txt`` files), ``cityscapes`` (label-id PNGs + ``.txt``, the official evaluators' inputs),
  ``coco`` (``results.json`` with compressed RLE masks, for pycocotools), and the two panoptic
  layouts ``cityscapes-panoptic`` / ``coco-panoptic`` (``PanopticFiles``).
* Panoptic files (COCO's panoptic format, which Cityscapes' ``gtFine_panoptic`` files follow):
  ``NAME.json`` (``annotations``: per image ``image_id``, ``file_name`` and ``segments_info``, each
  segment ``id``, ``category_id``, ``area``, ``bbox`` [x, y, w, h], ``iscrowd``; ``categories``
  with ``isthing``; ``images``) and ``NAME/<file_name>`` RGB PNGs with segment id = R + 256 G +
  256^2 B (0 = void). ``read_panoptic_files`` reads such a pair back.
* Instance ``.txt`` files use the Cityscapes results convention: one ``<image stem>.txt`` per image,
  one line per instance, ``<mask png path relative to the txt> <class id> <score>``; a mask is the
  non-zero pixels of its PNG. An image with no instance has an empty ``.txt``.

One RLE encoder (``rle_encode``, COCO's uncompressed form; ``rle_compress`` gives COCO's string
form of the same runs). Functions take arrays and prediction objects (``predictor.Prediction``);
this module runs no network.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .data.cityscapes import train_ids_to_label_ids
from .data.io import voc_palette, write_label
from .files import write_text, writing
from .panoptic import Panoptic, ids_to_rgb, rgb_to_ids, segment_boxes
from .visualize import instance_colors, legend, mask_outline, semantic_overlay, stack_vertically

PANOPTIC_FORMATS = ("cityscapes-panoptic", "coco-panoptic")
FORMATS = ("voc", "cityscapes", "coco") + PANOPTIC_FORMATS


# ----------------------------------------------------------------------------------------------
# RLE (COCO's run-length encoding)
# ----------------------------------------------------------------------------------------------

def rle_encode(mask: np.ndarray | torch.Tensor) -> dict:
    """A binary mask as COCO uncompressed RLE.

    Args:
        mask: (H, W) bool (or 0/1).

    Returns:
        ``{"size": [H, W], "counts": [...]}``: run lengths of the column-major (Fortran order)
        flattening, alternating zeros and ones, starting with zeros (a leading 0 when the first
        pixel is set).
    """
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode takes one (H, W) mask, got shape {mask.shape}")
    flat = mask.astype(bool).ravel(order="F")
    if flat.size == 0:
        return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """COCO uncompressed RLE -> (H, W) bool mask (the inverse of ``rle_encode``)."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = np.asarray(rle["counts"], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"not an uncompressed COCO RLE ({error}); expected {{'size': [H, W], 'counts': [...]}} "
                         "(compressed string counts need pycocotools)") from error
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {int(counts.sum()) if counts.ndim == 1 else '?'} but size "
                         f"{height}x{width} has {height * width} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(width, height).T.copy()



def rle_compress(rle: dict) -> dict:
    """COCO's compressed (string) form of an uncompressed RLE: ``{"size": [H, W], "counts": str}``.

    Each run length, from the third on as the difference to the run two before, is written in
    5-bit groups, least significant first, each group offset by 48 into printable ASCII, with bit
    0x20 set while more groups follow (0x10 carries the sign): pycocotools' ``encode`` output.
    """
    counts = [int(c) for c in rle["counts"]]
    characters = []
    for index, value in enumerate(counts):
        if index > 2:
            value -= counts[index - 2]
        more = True
        while more:
            group = value & 0x1F
            value >>= 5
            more = value != -1 if group & 0x10 else value != 0
            characters.append(chr(group + (0x20 if more else 0) + 48))
    return {"size": list(rle["size"]), "counts": "".join(characters)}


# ----------------------------------------------------------------------------------------------
# One image's files (bridgeseg predict)
# ----------------------------------------------------------------------------------------------

def prediction_record(prediction) -> dict:
    """The JSON record of a ``Prediction``: ``{"image_size": [H, W], "class_names": [...],
    "instances": [...]}``; each instance has ``id`` (its value in ``instance_map``), ``class_id``,
    ``class_name``, ``score``, ``box`` [x0, y0, x1, y1] (pixel coordinates, pixel k's centre at k),
    ``area`` and ``mask`` (COCO uncompressed RLE)."""
    items = []
    if prediction.instances is not None:
        inst = prediction.instances.to("cpu")
        for index in range(len(inst)):
            label = int(inst.labels[index])
            items.append({"id": index + 1, "class_id": label, "class_name": prediction.class_names[label],
                          "score": round(float(inst.scores[index]), 6),
                          "box": [round(float(v), 3) for v in inst.boxes[index].tolist()],
                          "area": int(inst.masks[index].sum()), "mask": rle_encode(inst.masks[index])})
    return {"image_size": list(prediction.image_size), "class_names": list(prediction.class_names),
            "instances": items}

def render_overlay(image: np.ndarray, prediction) -> Image.Image:
    """The image tinted with class colours, each instance outlined in its own colour, and below it a
    legend of the classes present: (H + legend, W) RGB."""
    picture = semantic_overlay(image, prediction.semantic)
    if prediction.instances is not None and len(prediction.instances):
        masks = prediction.instances.masks.cpu().numpy()
        for mask, color in zip(masks, instance_colors(len(masks))):
            outline = mask_outline(mask)
            picture[outline] = color
    present = [int(c) for c in np.unique(prediction.semantic) if 0 < c < len(prediction.class_names)]
    if prediction.instances is not None:
        present = sorted(set(present) | set(prediction.instances.labels.tolist()))
    canvas = Image.fromarray(picture)
    strip = legend(prediction.class_names, canvas.width, present)
    if strip is None:
        return canvas
    return stack_vertically([canvas, strip], gap=0)


def write_instance_map(path: str | Path, instance_map: np.ndarray) -> None:
    """(H, W) instance ids as a grayscale PNG: 8-bit, or 16-bit when an id exceeds 255."""
    if instance_map.max(initial=0) > 65535:
        raise ValueError(f"cannot write {path}: more than 65535 instances")
    dtype = np.uint16 if instance_map.max(initial=0) > 255 else np.uint8
    Image.fromarray(instance_map.astype(dtype)).save(path)


def write_prediction(out_dir: Path, stem: str, image: np.ndarray, prediction,
                     source: str | None = None) -> list[Path]:
    """Write ``<stem>_semantic.png``, ``<stem>_instances.png``, ``<stem>.json``, ``<stem>_overlay.png``."""
    paths = [out_dir / f"{stem}_semantic.png", out_dir / f"{stem}_instances.png", out_dir / f"{stem}.json",
             out_dir / f"{stem}_overlay.png"]
    write_label(paths[0], prediction.semantic)
    write_instance_map(paths[1], prediction.instance_map())
    record = prediction_record(prediction)
    if source is not None:
        record = {"image": source, **record}
    paths[2].write_text(json.dumps(record))
    render_overlay(image, prediction).save(paths[3])
    return paths


# ----------------------------------------------------------------------------------------------
# Instance .txt files
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Whole-dataset files (bridgeseg predict-dataset)

def write_voc_prediction(out_dir: Path, name: str, semantic: np.ndarray, masks: np.ndarray | None,
                         class_ids, scores) -> None:
    """VOC server format: ``OUT/<id>.png`` palette PNG of class indices; instances, when given, as
    ``OUT/instances/<id>.txt`` + masks (what ``bridgeseg score instance --gt-format voc`` reads)."""
    write_label(out_dir / f"{name}.png", semantic)
    if masks is not None:
        write_instance_txt(out_dir / "instances" / f"{name}.txt", masks, class_ids, scores)


def write_cityscapes_prediction(out_dir: Path, name: str, semantic_train_ids: np.ndarray, masks: np.ndarray | None,
                                train_class_ids, scores) -> None:
    """Cityscapes evaluator format: ``OUT/<stem>_labelIds.png`` (8-bit label ids, not train ids) and,
    with instances, ``OUT/<stem>.txt`` lines ``masks/<stem>_NNN.png <label id> <score>``."""
    stem = Path(name).name.removesuffix("_leftImg8bit")
    out_dir.mkdir(parents=True, exist_ok=True)
    label_ids = train_ids_to_label_ids(semantic_train_ids).astype(np.uint8)
    Image.fromarray(label_ids).save(out_dir / f"{stem}_labelIds.png")
    if masks is not None:
        label_class_ids = train_ids_to_label_ids(np.asarray(train_class_ids, dtype=np.int64))
        write_instance_txt(out_dir / f"{stem}.txt", masks, label_class_ids, scores)


class CocoResults:
    """Accumulates COCO instance-segmentation results (compressed RLE masks) and writes
    ``results.json`` (a list of {image_id, category_id, segmentation, score}, what pycocotools'
    ``COCO.loadRes`` reads) and ``images.json`` (image_id -> file name), with category ids = the
    dataset's class ids."""

    def __init__(self) -> None:
        self.results: list[dict] = []
        self.images: list[dict] = []

    def add(self, name: str, size: tuple[int, int], masks: np.ndarray, class_ids, scores) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": name, "height": int(size[0]), "width": int(size[1])})
        for mask, class_id, score in zip(masks, class_ids, scores):
            rle = rle_compress(rle_encode(mask))
            self.results.append({"image_id": image_id, "category_id": int(class_id), "segmentation": rle,
                                 "score": round(float(score), 6)})

    def write(self, out_dir: Path, class_names: tuple[str, ...]) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "images.json").write_text(json.dumps({
            "images": self.images,
            "categories": [{"id": index, "name": name} for index, name in enumerate(class_names) if index > 0]}))
        path = out_dir / "results.json"
        path.write_text(json.dumps(self.results))
        return path


# ----------------------------------------------------------------------------------------------
# Panoptic files (COCO's panoptic format; Cityscapes' gtFine_panoptic layout)

def panoptic_categories(class_names, thing_classes, category_ids) -> list[dict]:
    """The ``categories`` of a panoptic JSON: per class index ``i``, ``{"id": category_ids[i], "name",
    "isthing", "color"}`` (its palette colour)."""
    palette = voc_palette()
    return [{"id": int(category_ids[index]), "name": name, "isthing": int(index in thing_classes),
             "color": [int(c) for c in palette[index]]} for index, name in enumerate(class_names)]


class PanopticFiles:
    """Writes panoptic predictions: each image's PNG as it comes (``add``), the JSON at the end.

    Args:
        out_dir: the output folder; the files are ``OUT/NAME.json`` and ``OUT/NAME/*.png``.
        name: the base name (``cityscapes_panoptic_val``, ``panoptic_val``).
        categories: the JSON's categories (``panoptic_categories``).
        category_ids: (C,) the category id written for each class index.
    """

    def __init__(self, out_dir: str | Path, name: str, categories: list[dict], category_ids) -> None:
        self.json_path = Path(out_dir) / f"{name}.json"
        self.folder = Path(out_dir) / name
        with writing(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        self.categories = categories
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        self.annotations: list[dict] = []
        self.images: list[dict] = []

    def add(self, image_id: str, file_name: str, panoptic: Panoptic) -> None:
        """Write one image's PNG and remember its segments."""
        with writing(self.folder / file_name):
            Image.fromarray(ids_to_rgb(panoptic.ids)).save(self.folder / file_name)
        boxes, areas = segment_boxes(panoptic), panoptic.areas()
        segments = [{"id": int(segment), "category_id": int(self.category_ids[category]), "area": int(area),
                     "bbox": [int(v) for v in box], "iscrowd": int(crowd)}
                    for segment, category, area, box, crowd in zip(panoptic.segment_ids, panoptic.categories, areas,
                                                                   boxes, panoptic.crowd)]
        self.annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
        height, width = panoptic.ids.shape
        self.images.append({"id": image_id, "file_name": file_name, "height": int(height), "width": int(width)})

    def write(self) -> Path:
        """Write ``NAME.json``; returns its path."""
        return write_text(self.json_path, json.dumps({"images": self.images, "annotations": self.annotations,
                                                      "categories": self.categories}))


def read_panoptic_files(json_path: str | Path, folder: str | Path | None = None):
    """Read a panoptic JSON and its PNG folder (default: the JSON's path without ``.json``).

    Returns:
        ``(categories, annotations, load)``: the JSON's category list, its annotation list, and
        ``load(annotation) -> Panoptic`` reading that image's PNG (segment categories are the
        file's category ids; ``crowd`` from ``iscrowd``).

    Raises:
        FileNotFoundError / ValueError naming the file: a missing JSON, folder or PNG, a JSON
        without ``annotations`` or ``categories``.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"panoptic JSON {json_path} does not exist")
    folder = Path(folder) if folder is not None else json_path.with_suffix("")
    if not folder.is_dir():
        raise FileNotFoundError(f"panoptic PNG folder {folder} does not exist (give it with the folder option)")
    try:
        record = json.loads(json_path.read_text())
        categories, annotations = record["categories"], record["annotations"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{json_path} is not a panoptic JSON with 'annotations' and 'categories' ({error})") from None

    def load(annotation: dict) -> Panoptic:
        path = folder / annotation["file_name"]
        try:
            with Image.open(path) as image:
                ids = rgb_to_ids(np.asarray(image.convert("RGB")))
        except FileNotFoundError:
            raise FileNotFoundError(f"panoptic PNG {path} (listed in {json_path}) does not exist") from None
        segments = annotation["segments_info"]
        return Panoptic(ids, np.array([s["id"] for s in segments], dtype=np.int64),
                        np.array([s["category_id"] for s in segments], dtype=np.int64),
                        np.array([bool(s.get("iscrowd", 0)) for s in segments], dtype=bool))

    return categories, annotations, load

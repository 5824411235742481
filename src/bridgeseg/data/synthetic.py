"""The embedded synthetic dataset: shape scenes written in the PASCAL VOC layout.

Every scene has a cluttered, grainy background and a few smooth, shaded shapes. Classes differ
by shape only: each instance gets a random colour and shading whatever its class, and squares,
triangles, crosses and stars are randomly rotated. Instances of one class are often placed so that they touch or
overlap (the later one occludes the earlier), which is what the instance step must untangle.
Class frequencies are unequal: ``star`` is rare. As in VOC, a void band (255) runs along every
object boundary in both label maps. ``python -m bridgeseg data synthetic --out DIR`` writes one.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .io import VOID, write_label

GENERATOR_VERSION = 2  # bump when the same record would give other files
RECORD_FILE = "synthetic.json"  # what generate_dataset wrote into a root (see is_generated)
TRAIN_IMAGES, VAL_IMAGES = 3000, 300  # the demo's dataset; 300 validation scenes hold enough stars
                                      # (the rare class) for a mean IoU that moves little between runs

CLASS_NAMES = ("background", "circle", "square", "triangle", "cross", "star")
CLASS_FREQUENCIES = (0.30, 0.28, 0.24, 0.12, 0.06)  # of foreground instances; star is the rare class


@dataclass(frozen=True)
class SceneSpec:
    """Knobs of the generator (sizes in pixels)."""

    @classmethod
    def for_size(cls, image_size: int) -> "SceneSpec":
        """The default scene scaled to ``image_size`` pixels (object sizes in proportion)."""
        default = cls()
        ratio = image_size / default.image_size
        return cls(image_size=image_size, min_size=max(4, round(default.min_size * ratio)),
                   max_size=max(6, round(default.max_size * ratio)))

    image_size: int = 128
    min_objects: int = 2
    max_objects: int = 4
    min_size: int = 36
    max_size: int = 72
    touch_probability: float = 0.5
    min_visible_fraction: float = 0.45
    void_width: int = 1


def _shape_polygon(kind: str, cx: float, cy: float, size: float, angle: float) -> list[tuple[float, float]]:
    r = size / 2
    if kind == "square":
        points = [(-r, -r), (r, -r), (r, r), (-r, r)]
        points = [(x * 0.85, y * 0.85) for x, y in points]
    elif kind == "triangle":
        points = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        points = [(x, y + r * 0.15) for x, y in points]
    elif kind == "cross":
        t = r * 0.36
        points = [(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r), (-t, t), (-r, t), (-r, -t),
                  (-t, -t)]
    elif kind == "star":
        points = [((r if i % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + i * math.pi / 5),
                   (r if i % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    else:
        raise ValueError(kind)
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _shape_mask(kind: str, cx: float, cy: float, size: float, angle: float, image_size: int) -> np.ndarray:
    """A filled shape as an (S, S) bool mask, drawn at 4x and downsampled (smooth, exact area)."""
    scale = 4
    canvas = Image.new("L", (image_size * scale, image_size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    if kind == "circle":
        r = size / 2 * scale
        draw.ellipse([cx * scale - r, cy * scale - r, cx * scale + r, cy * scale + r], fill=255)
    else:
        draw.polygon([(x * scale, y * scale) for x, y in _shape_polygon(kind, cx, cy, size, angle)], fill=255)
    small = canvas.resize((image_size, image_size), Image.BOX)
    return np.asarray(small) >= 128


def _smooth_noise(rng: np.random.Generator, size: int, cell: int) -> np.ndarray:
    """(S, S, 3) float noise with unit variance, smooth over about ``cell`` pixels."""
    coarse = rng.normal(0, 1, (max(2, size // cell), max(2, size // cell), 3)).astype(np.float32)
    return np.stack([np.asarray(Image.fromarray(coarse[..., c]).resize((size, size), Image.BICUBIC))
                     for c in range(3)], axis=-1)


def _background(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """Cluttered background: blotches and grain around colour ``base``, (S, S, 3) float."""
    return base + rng.uniform(8, 20) * _smooth_noise(rng, size, 10) + rng.normal(0, rng.uniform(12, 22), (size, size, 3))


def _object_fill(rng: np.random.Generator, size: int, base: np.ndarray) -> np.ndarray:
    """An object's surface: colour ``base`` with soft shading and little grain, (S, S, 3) float."""
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    shading = (np.cos(angle) * ramp[None, :] + np.sin(angle) * ramp[:, None])[..., None]
    return base + rng.uniform(0, 20) * shading + rng.normal(0, 3, (size, size, 3))


def _random_color(rng: np.random.Generator, avoid: np.ndarray | None = None, distance: float = 90.0) -> np.ndarray:
    """A random RGB colour, at least ``distance`` away from ``avoid`` (so every shape is visible)."""
    while True:
        color = rng.uniform(20, 235, 3)
        if avoid is None or np.linalg.norm(color - avoid) >= distance:
            return color


def _boundary_band(instance_map: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` of a boundary between two different ids (background included)."""
    padded = np.pad(instance_map, width, mode="edge")
    size = instance_map.shape[0]
    band = np.zeros(instance_map.shape, dtype=bool)
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            shifted = padded[width + dy:width + dy + size, width + dx:width + dx + instance_map.shape[1]]
            band |= shifted != instance_map
    return band


def render_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec()):
    """One scene: (image (S, S, 3) uint8, semantic (S, S) uint8, instance (S, S) uint8)."""
    s = spec.image_size
    background_color = _random_color(rng)
    background = _background(rng, s, background_color)
    image = background.copy()
    instance_map = np.zeros((s, s), dtype=np.int64)
    classes: list[int] = []
    count = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    centres: list[tuple[float, float, float, int]] = []
    for _ in range(count * 4):
        if len(classes) >= count:
            break
        label = 1 + int(rng.choice(len(CLASS_FREQUENCIES), p=CLASS_FREQUENCIES))
        size = rng.uniform(spec.min_size, spec.max_size)
        same_class = [c for c in centres if c[3] == label]
        if same_class and rng.random() < spec.touch_probability:
            # next to an instance of the same class, at about the distance where the two touch
            ox, oy, osize, _ = same_class[int(rng.integers(len(same_class)))]
            angle = rng.uniform(0, 2 * math.pi)
            distance = (osize + size) / 2 * rng.uniform(0.55, 0.95)
            cx, cy = ox + distance * math.cos(angle), oy + distance * math.sin(angle)
        else:
            cx, cy = rng.uniform(size / 3, s - size / 3, 2)
        mask = _shape_mask(CLASS_NAMES[label], cx, cy, size, rng.uniform(0, 2 * math.pi), s)
        area = mask.sum()
        if area < 20:
            continue
        new_map = np.where(mask, len(classes) + 1, instance_map)
        visible = [(new_map == i + 1).sum() / max(1, (instance_map == i + 1).sum()) for i in range(len(classes))]
        if any(v < spec.min_visible_fraction for v in visible):
            continue  # would hide too much of an earlier instance
        instance_map = new_map
        classes.append(label)
        centres.append((cx, cy, size, label))
        fill = _object_fill(rng, s, _random_color(rng, avoid=background_color))
        image = np.where(mask[..., None], fill, image)
    image = np.clip(image, 0, 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))
    lookup = np.array([0] + classes, dtype=np.int64)
    semantic = lookup[instance_map]
    band = _boundary_band(instance_map, spec.void_width) if spec.void_width > 0 else np.zeros_like(semantic, bool)
    semantic = np.where(band, VOID, semantic).astype(np.uint8)
    instance = np.where(band, VOID, instance_map).astype(np.uint8)
    return image, semantic, instance


def _write_scene(task: tuple[Path, str, int, int, int, SceneSpec]) -> None:
    """Render and write one scene; its random stream depends only on (seed, split, index)."""
    root, name, seed, split_index, index, spec = task
    image, semantic, instance = render_scene(np.random.default_rng([seed, split_index, index]), spec)
    Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
    write_label(root / "SegmentationClass" / f"{name}.png", semantic)
    write_label(root / "SegmentationObject" / f"{name}.png", instance)


def generate_dataset(root: str | Path, num_train: int = TRAIN_IMAGES, num_val: int = VAL_IMAGES, seed: int = 0,
                     spec: SceneSpec = SceneSpec(), progress: bool = False, workers: int | None = None) -> Path:
    """Write a synthetic dataset in the VOC layout under ``root``; returns ``root``.

    Writes ``JPEGImages/*.jpg``, ``SegmentationClass/*.png``, ``SegmentationObject/*.png``,
    ``ImageSets/Segmentation/{train,val}.txt`` and ``classes.txt``. Every scene has its own random
    stream from (seed, split, index): same seed, same files, with any number of ``workers``
    (processes; None = one per CPU), and the validation scenes do not depend on ``num_train``.
    """
    root = Path(root)
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    splits = {"train": num_train, "val": num_val}
    names = {split: [f"{split}_{i:05d}" for i in range(n)] for split, n in splits.items()}
    tasks = [(root, name, seed, split_index, index, spec) for split_index, split in enumerate(splits)
             for index, name in enumerate(names[split])]
    workers = min(len(tasks), workers or os.cpu_count() or 1)
    from tqdm import tqdm

    with tqdm(total=len(tasks), desc="generating scenes", unit="img", disable=not progress) as bar:
        if workers <= 1:
            for task in tasks:
                _write_scene(task)
                bar.update()
        else:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_write_scene, tasks, chunksize=16):
                    bar.update()
    for split in splits:
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names[split]) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    (root / RECORD_FILE).write_text(json.dumps(_record(num_train, num_val, seed, spec), indent=2) + "\n")
    return root


def is_generated(root: str | Path, num_train: int = TRAIN_IMAGES, num_val: int = VAL_IMAGES, seed: int = 0,
                 spec: SceneSpec = SceneSpec()) -> bool:
    """Whether ``root`` holds what ``generate_dataset`` with these arguments writes (this version of the
    generator), so that it need not be written again."""
    try:
        written = json.loads((Path(root) / RECORD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return written == json.loads(json.dumps(_record(num_train, num_val, seed, spec)))  # tuples as JSON lists


def _record(num_train: int, num_val: int, seed: int, spec: SceneSpec) -> dict:
    """What ``generate_dataset`` writes to ``ROOT/synthetic.json``: same record, same files."""
    return {"generator_version": GENERATOR_VERSION, "train": num_train, "val": num_val, "seed": seed,
            "spec": asdict(spec)}

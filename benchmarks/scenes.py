"""Scene generators the demo recipe was not tuned on, written in the PASCAL VOC layout.

The demo trains on ``bridgeseg.data.synthetic``: square 128 x 128 scenes, 2 to 4 large (36-72 px),
smooth, shaded circles / squares / triangles / crosses / stars on a grainy background, star rare,
a 1 px void band. The families here differ from it (and from each other) in shapes, holes, image
size and aspect ratio, object counts and sizes, class balance, textures, background and void band:

``rings``     160 x 120 (width x height). ring (a disc with a hole), hexagon, ellipse, L-shape and
              a rare heart (5% of instances); 3 to 9 flat-coloured objects of 20-46 px that cluster
              around one to three centres, same-class neighbours often touching (an object pressed
              against another often takes a colour close to its); smooth two-colour gradient
              background; 1 px void band, like VOC.
``textured``  192 x 112. diamond / half disc / arrow at 60 / 30 / 10%; every object and the
              background filled with a random texture (stripes at a random angle, a rotated
              checker, blotches), so neither colour nor texture says anything about the class;
              1 to 8 objects of 12-70 px (log-uniform); no void band.
``cells``     176 x 144. many (6 to 20) small irregular blobs of 12-30 px in one stain colour:
              round cells, rods and rare lobed cells (8%), each with a darker rim and nucleus,
              packed so that they touch; smooth or grainy light background; no void band.

``glyphs``    112 x 176, portrait (narrower than the demo's 128-pixel crop). Six classes, steeply
              imbalanced (30 / 24 / 18 / 14 / 10 / 4%): bar (thin, 4-7 times as long as wide),
              T, U, frame (a square with a square hole), crescent (a disc with a bite), and a
              rare hourglass; 2 to 6 objects of 24-60 px, thin parts throughout; each object
              shaded from light to dark along a random direction with a dark outline, on a
              low-contrast blotchy background; 1 px void band.

``crowded=True`` draws runs of same-class objects (class balance unchanged) and slides almost every
object up against one of its own class: the case where connected components of the class map
cannot separate instances (88% of rings instances share a component with another, against 57%).

Every scene's random stream depends only on (family, seed, split, index), so the files are the
same whatever the number of worker processes, and the validation scenes do not depend on the
number of training scenes. ::

    python benchmarks/scenes.py --family rings --out /tmp/rings --train 800 --val 100 [--crowded]
    python benchmarks/scenes.py --family rings --out /tmp/rings --sheet /tmp/rings.png   # look at them
"""

from __future__ import annotations

import argparse
import json
import math
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.ndimage
from PIL import Image, ImageDraw, ImageFilter

from bridgeseg.data.io import VOID, read_label, voc_palette, write_label

GENERATOR_VERSION = 1  # bump when the same record would give other files
RECORD_FILE = "scenes.json"
SUPERSAMPLE = 4  # shapes are drawn at 4x and box-filtered down: smooth edges, exact areas

# A shape is a list of (polygon, filled) in image coordinates, drawn in order: a polygon with
# filled=False cuts a hole (a ring's inside, a crescent's bite).
Polygon = np.ndarray  # (N, 2) float, columns x, y
Shape = list[tuple[Polygon, bool]]


# --------------------------------------------------------------------------------------------
# Geometry: outlines centred on the origin, then rotated and moved.


def _ellipse(rx: float, ry: float, vertices: int = 48) -> Polygon:
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    return np.stack([rx * np.cos(t), ry * np.sin(t)], axis=1)


def _regular_polygon(sides: int, radius: float) -> Polygon:
    return _ellipse(radius, radius, sides)


def _l_shape(size: float, thickness: float) -> Polygon:
    """An L whose bounding square has side ``size``, arms ``thickness`` wide, centred on its box."""
    s, t = size / 2, thickness
    return np.array([(-s, -s), (-s + t, -s), (-s + t, s - t), (s, s - t), (s, s), (-s, s)], dtype=float)


def _heart(radius: float, vertices: int = 64) -> Polygon:
    """The classic parametric heart, scaled to about ``radius``, point down."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x, y + 2.5], axis=1) * (radius / 16.5)


def _half_disc(radius: float, vertices: int = 32) -> Polygon:
    t = np.linspace(0, np.pi, vertices)
    return np.stack([radius * np.cos(t), radius * np.sin(t) - radius * 0.42], axis=1)


def _arrow(length: float) -> Polygon:
    """A block arrow pointing right: shaft 0.28 of the length wide, head 0.75 wide."""
    h, shaft, head, neck = length / 2, length * 0.14, length * 0.375, length * 0.05
    return np.array([(-h, -shaft), (neck, -shaft), (neck, -head), (h, 0), (neck, head), (neck, shaft),
                     (-h, shaft)], dtype=float)


def _radial_blob(rng: np.random.Generator, radius: float, aspect: float, lobes: int = 0,
                 lobe_depth: float = 0.0, wobble: float = 0.08, vertices: int = 60) -> Polygon:
    """An irregular closed blob: radius(theta) with random low harmonics (and ``lobes`` bumps),
    stretched to ``aspect`` (width / height)."""
    t = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4):
        r += wobble / k * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    if lobes:
        r += lobe_depth * np.cos(lobes * t + rng.uniform(0, 2 * np.pi))
    scale_x, scale_y = math.sqrt(aspect), 1 / math.sqrt(aspect)
    return np.stack([radius * scale_x * r * np.cos(t), radius * scale_y * r * np.sin(t)], axis=1)


def _posed(polygon: Polygon, angle: float) -> Polygon:
    """``polygon`` rotated by ``angle`` (radians) about the origin."""
    cos, sin = math.cos(angle), math.sin(angle)
    return polygon @ np.array([[cos, sin], [-sin, cos]])


# --------------------------------------------------------------------------------------------
# Rasterising and placing shapes.


@dataclass
class Patch:
    """A rasterised shape centred on the origin: ``mask`` (h, w) bool whose pixel (0, 0) lies at
    (``top``, ``left``) relative to the shape's centre."""

    mask: np.ndarray
    top: int
    left: int

    def placed(self, cy: int, cx: int, height: int, width: int) -> np.ndarray:
        """The shape with its centre at pixel (cy, cx) of a (height, width) image, clipped to it."""
        full = np.zeros((height, width), dtype=bool)
        top, left = cy + self.top, cx + self.left
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + self.mask.shape[0], height), min(left + self.mask.shape[1], width)
        if y1 > y0 and x1 > x0:
            full[y0:y1, x0:x1] = self.mask[y0 - top:y1 - top, x0 - left:x1 - left]
        return full

    @property
    def radius(self) -> float:
        """Half the diagonal of the patch: no pixel of the shape lies farther from its centre."""
        return math.hypot(*self.mask.shape) / 2


def rasterize(shape: Shape) -> Patch:
    """Draw a shape (centred on the origin) at ``SUPERSAMPLE`` x and box-filter it down."""
    points = np.concatenate([polygon for polygon, _ in shape])
    left, top = np.floor(points.min(axis=0)).astype(int) - 1
    right, bottom = np.ceil(points.max(axis=0)).astype(int) + 1
    width, height = right - left, bottom - top
    canvas = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon, filled in shape:
        scaled = (polygon - (left, top)) * SUPERSAMPLE
        draw.polygon([tuple(p) for p in scaled], fill=255 if filled else 0)
    small = np.asarray(canvas.resize((width, height), Image.BOX)) >= 128
    return Patch(small, int(top), int(left))


def slide_until_touching(patch: Patch, anchor: np.ndarray, anchor_centre: tuple[float, float],
                         angle: float, overlap: int) -> tuple[int, int]:
    """Centre (cy, cx) for ``patch`` that makes it touch the ``anchor`` mask (8-connected) coming
    from direction ``angle``, then ``overlap`` pixels further in (it then occludes a little)."""
    height, width = anchor.shape
    grown = scipy.ndimage.binary_dilation(anchor, structure=np.ones((3, 3), bool))
    ys, xs = np.nonzero(anchor)
    if len(ys) == 0:
        return round(anchor_centre[0]), round(anchor_centre[1])
    reach = math.hypot(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) / 2 + patch.radius + 2
    cy0, cx0 = anchor_centre
    centre = (round(cy0), round(cx0))
    for distance in np.arange(reach, -1, -1.0):
        centre = (round(cy0 + distance * math.sin(angle)), round(cx0 + distance * math.cos(angle)))
        if (patch.placed(*centre, height, width) & grown).any():
            distance = max(distance - overlap, 0)
            return round(cy0 + distance * math.sin(angle)), round(cx0 + distance * math.cos(angle))
    return centre


@dataclass(frozen=True)
class Layout:
    """Where objects go: counts, clustering and touching (sizes belong to each family's shapes)."""

    width: int
    height: int
    min_objects: int
    max_objects: int
    touch_probability: float      # an object is slid against an earlier one ...
    same_class_probability: float  # ... of its own class when there is one, with this probability
    repeat_probability: float = 0.0  # an object takes the previous one's class (class balance unchanged)
    max_overlap: int = 2          # pixels it then moves on past touching (0..max_overlap)
    clusters: int = 0             # > 0: free objects gather around 1..clusters centres
    cluster_spread: float = 0.14  # standard deviation of a cluster, in image widths
    min_visible_fraction: float = 0.6  # an earlier object keeps at least this much of its area
    min_inside_fraction: float = 0.7   # at most 30% of an object lies outside the image
    min_area: int = 30

    def crowded(self) -> "Layout":
        """The same layout with same-class runs of objects, nearly every one pressed against one of
        its own class."""
        return Layout(**{**asdict(self), "touch_probability": 0.95, "same_class_probability": 1.0,
                         "repeat_probability": max(self.repeat_probability, 0.7)})


@dataclass
class Placed:
    """An object put into a scene: its class, its full mask when placed and its centre."""

    label: int
    mask: np.ndarray
    centre: tuple[int, int]
    anchor: int | None  # the index of the object it was slid against


def place_objects(rng: np.random.Generator, layout: Layout, frequencies: tuple[float, ...],
                  make_shape: Callable[[np.random.Generator, int], Shape]) -> tuple[np.ndarray, list[Placed]]:
    """Put objects into an empty scene; returns the instance map (0 background, i + 1 = object i,
    later objects on top) and the objects in drawing order."""
    h, w = layout.height, layout.width
    instance_map = np.zeros((h, w), dtype=np.int64)
    objects: list[Placed] = []
    count = int(rng.integers(layout.min_objects, layout.max_objects + 1))
    centres = [(rng.uniform(0.25, 0.75) * h, rng.uniform(0.2, 0.8) * w)
               for _ in range(int(rng.integers(1, layout.clusters + 1)) if layout.clusters else 0)]
    for _ in range(count * 10):
        if len(objects) >= count:
            break
        label = 1 + int(rng.choice(len(frequencies), p=frequencies))
        if objects and rng.random() < layout.repeat_probability:
            label = objects[-1].label  # a Markov chain whose stationary law is still `frequencies`
        patch = rasterize(make_shape(rng, label))
        anchor = _pick_anchor(rng, layout, objects, label)
        if anchor is not None:
            visible = instance_map == anchor + 1
            centre = slide_until_touching(patch, visible, objects[anchor].centre, rng.uniform(0, 2 * np.pi),
                                          int(rng.integers(0, layout.max_overlap + 1)))
        else:
            centre = _free_centre(rng, layout, centres, patch.radius * 0.5)
        mask = patch.placed(*centre, h, w)
        if mask.sum() < max(layout.min_area, layout.min_inside_fraction * patch.mask.sum()):
            continue
        new_map = np.where(mask, len(objects) + 1, instance_map)
        if any((new_map == i + 1).sum() < layout.min_visible_fraction * o.mask.sum() for i, o in enumerate(objects)):
            continue  # it would hide too much of an earlier object
        instance_map = new_map
        objects.append(Placed(label, mask, centre, anchor))
    return instance_map, objects


def _free_centre(rng: np.random.Generator, layout: Layout, clusters: list[tuple[float, float]],
                 margin: float) -> tuple[int, int]:
    """A centre for an object that touches nothing on purpose: near a cluster centre when there are
    clusters, else anywhere, at least ``margin`` pixels inside the image."""
    h, w = layout.height, layout.width
    margin_y, margin_x = min(margin, h / 4), min(margin, w / 4)
    if clusters:
        cy, cx = clusters[int(rng.integers(len(clusters)))]
        cy, cx = rng.normal(cy, layout.cluster_spread * w), rng.normal(cx, layout.cluster_spread * w)
    else:
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    return round(np.clip(cy, margin_y, h - 1 - margin_y)), round(np.clip(cx, margin_x, w - 1 - margin_x))


def _pick_anchor(rng: np.random.Generator, layout: Layout, objects: list[Placed], label: int) -> int | None:
    """Index of the earlier object a new one is slid against, or None for a free placement."""
    if not objects or rng.random() >= layout.touch_probability:
        return None
    same = [i for i, o in enumerate(objects) if o.label == label]
    if same and rng.random() < layout.same_class_probability:
        return same[int(rng.integers(len(same)))]
    return int(rng.integers(len(objects)))


def boundary_band(instance_map: np.ndarray, width: int) -> np.ndarray:
    """Pixels within ``width`` (chessboard distance) of a pixel of another id, background included."""
    size = 2 * width + 1
    return (scipy.ndimage.maximum_filter(instance_map, size, mode="nearest")
            != scipy.ndimage.minimum_filter(instance_map, size, mode="nearest"))


def label_maps(instance_map: np.ndarray, objects: list[Placed], void_width: int) -> tuple[np.ndarray, np.ndarray]:
    """(semantic, instance) uint8 maps; objects hidden completely are dropped, ids renumbered 1..K."""
    ids = np.unique(instance_map[instance_map > 0])
    renumber = np.zeros(len(objects) + 1, dtype=np.int64)
    renumber[ids] = np.arange(1, len(ids) + 1)
    classes = np.array([0] + [o.label for o in objects], dtype=np.int64)
    instance, semantic = renumber[instance_map], classes[instance_map]
    if void_width > 0:
        band = boundary_band(instance_map, void_width)
        instance, semantic = np.where(band, VOID, instance), np.where(band, VOID, semantic)
    return semantic.astype(np.uint8), instance.astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Appearance: colours, noise, textures.


def random_color(rng: np.random.Generator, avoid: np.ndarray | None = None, distance: float = 80.0) -> np.ndarray:
    """A random RGB colour at least ``distance`` from ``avoid`` (tries 50 times, then gives up)."""
    for _ in range(50):
        color = rng.uniform(15, 240, 3)
        if avoid is None or np.linalg.norm(color - avoid) >= distance:
            break
    return color


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float, channels: int = 1) -> np.ndarray:
    """(H, W, channels) float noise of unit variance, smooth over about ``cell`` pixels."""
    coarse_h, coarse_w = max(2, round(height / cell)), max(2, round(width / cell))
    coarse = rng.normal(0, 1, (channels, coarse_h, coarse_w)).astype(np.float32)
    fine = np.stack([np.asarray(Image.fromarray(plane).resize((width, height), Image.BICUBIC)) for plane in coarse],
                    axis=-1).astype(float)
    return fine / max(fine.std(), 1e-6)


def gradient(rng: np.random.Generator, height: int, width: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(H, W, 3) linear blend from colour ``first`` to ``second`` along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width]
    along = xx * math.cos(angle) + yy * math.sin(angle)
    t = ((along - along.min()) / max(np.ptp(along), 1))[..., None]
    return first * (1 - t) + second * t


def texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float: stripes at a random angle, a rotated checker or blotches, in two random
    colours, with a little grain."""
    first = random_color(rng)
    second = random_color(rng, avoid=first, distance=70)
    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    angle = rng.uniform(0, np.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    kind = rng.choice(["stripes", "checker", "blotches"])
    if kind == "stripes":
        period = rng.uniform(4, 14)
        weight = 0.5 + 0.5 * np.tanh(3 * np.sin(2 * np.pi * u / period))
    elif kind == "checker":
        cell = rng.uniform(3, 10)
        weight = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(float)
    else:
        weight = 0.5 + 0.5 * np.tanh(2 * smooth_noise(rng, height, width, rng.uniform(4, 12))[..., 0])
    weight = weight[..., None]
    return first * (1 - weight) + second * weight + rng.normal(0, 5, (height, width, 3))


def finish_image(image: np.ndarray, blur: float) -> np.ndarray:
    """Clip to uint8 and blur a little (a camera's softness)."""
    image = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(blur)) if blur > 0 else image)


# --------------------------------------------------------------------------------------------
# The families.

Scene = tuple[np.ndarray, np.ndarray, np.ndarray]  # image (H, W, 3) uint8, semantic, instance (H, W) uint8


@dataclass(frozen=True)
class Family:
    """A scene generator: ``family(rng, crowded)`` renders one scene."""

    name: str
    class_names: tuple[str, ...]  # background first
    frequencies: tuple[float, ...]  # of foreground instances
    layout: Layout
    render: Callable[["Family", np.random.Generator, Layout], Scene]
    void_width: int

    def __call__(self, rng: np.random.Generator, crowded: bool = False) -> Scene:
        return self.render(self, rng, self.layout.crowded() if crowded else self.layout)


def _rings_shape(rng: np.random.Generator, label: int) -> Shape:
    """ring, hexagon, ellipse, L-shape, heart: 20-46 px across, randomly rotated."""
    size = rng.uniform(20, 46)
    r, angle = size / 2, rng.uniform(0, 2 * np.pi)
    if label == 1:  # ring: a disc with a round hole, 0.4-0.6 of its diameter
        return [(_ellipse(r, r), True), (_ellipse(r * rng.uniform(0.4, 0.6), r * rng.uniform(0.4, 0.6)), False)]
    if label == 2:
        return [(_posed(_regular_polygon(6, r), angle), True)]
    if label == 3:  # ellipse, aspect 1.6-2.6
        return [(_posed(_ellipse(r, r / rng.uniform(1.6, 2.6)), angle), True)]
    if label == 4:
        return [(_posed(_l_shape(size * 0.9, size * rng.uniform(0.28, 0.38)), angle), True)]
    return [(_posed(_heart(r), rng.uniform(-0.5, 0.5) + (np.pi if rng.random() < 0.3 else 0)), True)]


def _render_rings(family: Family, rng: np.random.Generator, layout: Layout) -> Scene:
    """Flat-coloured objects in clusters on a smooth gradient; an object slid against another
    often takes a colour close to that one's (a crowd in similar clothes)."""
    h, w = layout.height, layout.width
    background = gradient(rng, h, w, random_color(rng), random_color(rng))
    background += 6 * smooth_noise(rng, h, w, 20, 3) + rng.normal(0, 4, (h, w, 3))
    instance_map, objects = place_objects(rng, layout, family.frequencies, _rings_shape)
    image, colors = background.copy(), []
    for i, placed in enumerate(objects):
        local = background[placed.mask].mean(axis=0)
        if placed.anchor is not None and rng.random() < 0.5:
            color = np.clip(colors[placed.anchor] + rng.normal(0, 15, 3), 15, 240)
        else:
            color = random_color(rng, avoid=local)
        colors.append(color)
        visible = instance_map == i + 1
        image[visible] = color + rng.normal(0, 3, (int(visible.sum()), 3))
    semantic, instance = label_maps(instance_map, objects, family.void_width)
    return finish_image(image, 0.5), semantic, instance


def _textured_shape(rng: np.random.Generator, label: int) -> Shape:
    """diamond, half disc, arrow: 12-70 px across (log-uniform), randomly rotated."""
    size = math.exp(rng.uniform(math.log(12), math.log(70)))
    angle = rng.uniform(0, 2 * np.pi)
    if label == 1:  # a rhombus, 0.55-0.7 as wide as long
        r = size / 2
        polygon = np.array([(r, 0), (0, r * rng.uniform(0.55, 0.7)), (-r, 0), (0, -r * rng.uniform(0.55, 0.7))])
    elif label == 2:
        polygon = _half_disc(size / 2)
    else:
        polygon = _arrow(size)
    return [(_posed(polygon, angle), True)]


def _render_textured(family: Family, rng: np.random.Generator, layout: Layout) -> Scene:
    """Every object and the background get their own random texture; an object's mean colour is
    kept away from the background's near it so that it stays visible."""
    h, w = layout.height, layout.width
    background = texture(rng, h, w)
    instance_map, objects = place_objects(rng, layout, family.frequencies, _textured_shape)
    image = background.copy()
    for i, placed in enumerate(objects):
        local = background[placed.mask].mean(axis=0)
        fill = texture(rng, h, w)
        for _ in range(10):
            if np.linalg.norm(fill[placed.mask].mean(axis=0) - local) >= 50:
                break
            fill = texture(rng, h, w)
        visible = instance_map == i + 1
        image[visible] = fill[visible]
    semantic, instance = label_maps(instance_map, objects, family.void_width)
    return finish_image(image, 0.4), semantic, instance


def _cells_shape(rng: np.random.Generator, label: int) -> Shape:
    """round cell (6-11 px radius), rod (aspect 2-3, 12-30 px long), lobed cell (3-5 lobes)."""
    angle = rng.uniform(0, 2 * np.pi)
    if label == 1:
        polygon = _radial_blob(rng, rng.uniform(6, 11), rng.uniform(0.85, 1.2))
    elif label == 2:
        length = rng.uniform(12, 30)
        aspect = rng.uniform(2.0, 3.0)
        polygon = _radial_blob(rng, length / 2 / math.sqrt(aspect), aspect, wobble=0.05)
    else:
        polygon = _radial_blob(rng, rng.uniform(8, 13), 1.0, lobes=int(rng.integers(3, 6)), lobe_depth=0.28)
    return [(_posed(polygon, angle), True)]


def _render_cells(family: Family, rng: np.random.Generator, layout: Layout) -> Scene:
    """Cells in one stain colour (darker or lighter per cell), with a darker rim and a dark
    nucleus, on a light smooth background, grainy half of the time."""
    h, w = layout.height, layout.width
    paper = rng.uniform(190, 245, 3)
    background = paper + 8 * smooth_noise(rng, h, w, 40, 3) + 6 * smooth_noise(rng, h, w, 8, 1)
    if rng.random() < 0.5:
        background += rng.normal(0, rng.uniform(5, 14), (h, w, 3))
    stain = rng.uniform(40, 200, 3)
    instance_map, objects = place_objects(rng, layout, family.frequencies, _cells_shape)
    image = background.copy()
    yy, xx = np.mgrid[0:h, 0:w]
    grain = 10 * smooth_noise(rng, h, w, 5, 1)
    for i, placed in enumerate(objects):
        visible = instance_map == i + 1
        body = stain * rng.uniform(0.7, 1.25) + grain
        depth = scipy.ndimage.distance_transform_edt(placed.mask)
        body = body * np.where(depth < 2, 0.8, 1.0)[..., None]
        ys, xs = np.nonzero(placed.mask)
        cy, cx = ys.mean() + rng.normal(0, 1.5), xs.mean() + rng.normal(0, 1.5)
        radius = 0.35 * math.sqrt(len(ys) / np.pi)
        nucleus = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2
        body = np.where(nucleus[..., None], body * 0.6, body)
        image[visible] = body[visible]
    semantic, instance = label_maps(instance_map, objects, family.void_width)
    return finish_image(image, 0.6), semantic, instance


def _glyph_shape(rng: np.random.Generator, label: int) -> Shape:
    """bar, T, U, frame, crescent, hourglass: 24-60 px across, randomly rotated."""
    size = rng.uniform(24, 60)
    s, angle = size / 2, rng.uniform(0, 2 * np.pi)
    if label == 1:  # a bar 4-7 times as long as wide
        half_width = s / rng.uniform(4, 7)
        polygon = np.array([(-s, -half_width), (s, -half_width), (s, half_width), (-s, half_width)])
    elif label == 2:  # a T: the top bar and the stem 0.25-0.35 of the size thick
        t = size * rng.uniform(0.25, 0.35) / 2
        polygon = np.array([(-s, -s), (s, -s), (s, -s + 2 * t), (t, -s + 2 * t), (t, s), (-t, s),
                            (-t, -s + 2 * t), (-s, -s + 2 * t)])
    elif label == 3:  # a U: two arms and a base 0.25-0.35 of the size thick
        t = size * rng.uniform(0.25, 0.35)
        polygon = np.array([(-s, -s), (-s + t, -s), (-s + t, s - t), (s - t, s - t), (s - t, -s), (s, -s),
                            (s, s), (-s, s)])
    elif label == 4:  # a frame: the hole 0.45-0.65 of the side
        inner = s * rng.uniform(0.45, 0.65)
        return [(_posed(_regular_polygon(4, s * math.sqrt(2)), angle + np.pi / 4), True),
                (_posed(_regular_polygon(4, inner * math.sqrt(2)), angle + np.pi / 4), False)]
    elif label == 5:  # a crescent: a disc minus a smaller disc moved 0.35-0.5 of the radius off
        bite = _ellipse(s * 0.85, s * 0.85) + (s * rng.uniform(0.35, 0.5), 0)
        return [(_posed(_ellipse(s, s), angle), True), (_posed(bite, angle), False)]
    else:  # an hourglass: two triangles meeting at a neck 0.2-0.3 of the size wide
        neck = s * rng.uniform(0.2, 0.3)
        polygon = np.array([(-s * 0.8, -s), (s * 0.8, -s), (neck, 0), (s * 0.8, s), (-s * 0.8, s), (-neck, 0)])
    return [(_posed(polygon, angle), True)]


def _render_glyphs(family: Family, rng: np.random.Generator, layout: Layout) -> Scene:
    """Objects shaded from light to dark along a random direction, outlined in a darker tone, on a
    low-contrast blotchy background."""
    h, w = layout.height, layout.width
    paper = rng.uniform(60, 200, 3)
    background = paper + 12 * smooth_noise(rng, h, w, rng.uniform(6, 16), 3) + rng.normal(0, 4, (h, w, 3))
    instance_map, objects = place_objects(rng, layout, family.frequencies, _glyph_shape)
    image = background.copy()
    for i, placed in enumerate(objects):
        color = random_color(rng, avoid=background[placed.mask].mean(axis=0), distance=60)
        shaded = gradient(rng, h, w, np.clip(color * 1.25, 0, 255), color * 0.7)
        edge = scipy.ndimage.distance_transform_edt(placed.mask) < 1.5
        body = np.where(edge[..., None], shaded * 0.55, shaded)
        visible = instance_map == i + 1
        image[visible] = body[visible]
    semantic, instance = label_maps(instance_map, objects, family.void_width)
    return finish_image(image, 0.8), semantic, instance


GENERATORS: dict[str, Family] = {
    "rings": Family("rings", ("background", "ring", "hexagon", "ellipse", "lshape", "heart"),
                    (0.32, 0.25, 0.22, 0.16, 0.05),
                    Layout(160, 120, 3, 9, touch_probability=0.55, same_class_probability=0.8,
                           repeat_probability=0.3, max_overlap=2, clusters=3), _render_rings, void_width=1),
    "textured": Family("textured", ("background", "diamond", "half_disc", "arrow"), (0.6, 0.3, 0.1),
                       Layout(192, 112, 1, 8, touch_probability=0.3, same_class_probability=0.5, max_overlap=3),
                       _render_textured, void_width=0),
    "cells": Family("cells", ("background", "round", "rod", "lobed"), (0.62, 0.30, 0.08),
                    Layout(176, 144, 6, 20, touch_probability=0.6, same_class_probability=0.5, max_overlap=1,
                           min_visible_fraction=0.7, min_area=25), _render_cells, void_width=0),
    "glyphs": Family("glyphs", ("background", "bar", "tee", "u_shape", "frame", "crescent", "hourglass"),
                     (0.30, 0.24, 0.18, 0.14, 0.10, 0.04),
                     Layout(112, 176, 2, 6, touch_probability=0.35, same_class_probability=0.6, max_overlap=2),
                     _render_glyphs, void_width=1),
}


# --------------------------------------------------------------------------------------------
# Writing datasets.


def scene_rng(family: str, seed: int, split_index: int, index: int) -> np.random.Generator:
    """The random stream of one scene: a function of (family, seed, split, index) only."""
    return np.random.default_rng([zlib.crc32(family.encode()), seed, split_index, index])


def _write_scene(task: tuple[str, Path, str, int, int, int, bool]) -> None:
    family, root, name, seed, split_index, index, crowded = task
    image, semantic, instance = GENERATORS[family](scene_rng(family, seed, split_index, index), crowded)
    Image.fromarray(image).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
    write_label(root / "SegmentationClass" / f"{name}.png", semantic)
    write_label(root / "SegmentationObject" / f"{name}.png", instance)


def record(name: str, num_train: int, num_val: int, seed: int, crowded: bool) -> dict:
    """What ``write_dataset`` writes to ``ROOT/scenes.json``: same record, same files."""
    return {"family": name, "generator_version": GENERATOR_VERSION, "train": num_train, "val": num_val,
            "seed": seed, "crowded": crowded}


def is_written(name: str, root: str | Path, num_train: int, num_val: int, seed: int = 0, crowded: bool = False) -> bool:
    """Whether ``root`` already holds what ``write_dataset`` with these arguments would write."""
    try:
        return json.loads((Path(root) / RECORD_FILE).read_text()) == record(name, num_train, num_val, seed, crowded)
    except (FileNotFoundError, ValueError):
        return False


def write_dataset(name: str, root: str | Path, num_train: int, num_val: int, seed: int = 0, crowded: bool = False,
                  workers: int | None = None) -> Path:
    """Write ``num_train`` + ``num_val`` scenes of family ``name`` in the VOC layout under ``root``.

    Scenes are ``train_00000`` ... and ``val_00000`` ...; ``workers`` processes (None = one per
    CPU) render them, with the same files for any number of workers. Returns ``root``.
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown family {name!r}; choose one of {sorted(GENERATORS)}")
    root = Path(root)
    (root / RECORD_FILE).unlink(missing_ok=True)  # a half-written root is never taken for a finished one
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationObject", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    splits = {"train": num_train, "val": num_val}
    names = {split: [f"{split}_{i:05d}" for i in range(n)] for split, n in splits.items()}
    tasks = [(name, root, scene, seed, split_index, index, crowded) for split_index, split in enumerate(splits)
             for index, scene in enumerate(names[split])]
    workers = max(1, min(len(tasks), workers or os.cpu_count() or 1))
    if workers == 1:
        for task in tasks:
            _write_scene(task)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_scene, tasks, chunksize=16))
    for split, ids in names.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "classes.txt").write_text("\n".join(GENERATORS[name].class_names) + "\n")
    (root / RECORD_FILE).write_text(json.dumps(record(name, num_train, num_val, seed, crowded), indent=2) + "\n")
    return root


# --------------------------------------------------------------------------------------------
# Looking at them.


def colored(labels: np.ndarray) -> np.ndarray:
    return voc_palette()[labels]


def contact_sheet(root: str | Path, out: str | Path, count: int = 6, split: str = "val", zoom: int = 2) -> Path:
    """A PNG with one row per scene (the first ``count`` of ``split``): image | class map | instance
    map, in VOC palette colours (void cream), enlarged ``zoom`` times."""
    root = Path(root)
    ids = (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()[:count]
    rows = []
    for name in ids:
        image = np.asarray(Image.open(root / "JPEGImages" / f"{name}.jpg").convert("RGB"))
        semantic = read_label(root / "SegmentationClass" / f"{name}.png")
        instance = read_label(root / "SegmentationObject" / f"{name}.png")
        gap = np.full((image.shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate([image, gap, colored(semantic), gap, colored(instance)], axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = Image.fromarray(np.concatenate(rows[:-1], axis=0))
    sheet = sheet.resize((sheet.width * zoom, sheet.height * zoom), Image.NEAREST)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return Path(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", required=True, choices=sorted(GENERATORS))
    parser.add_argument("--out", required=True, help="dataset root to write (or read, with --sheet only)")
    parser.add_argument("--train", type=int, default=800)
    parser.add_argument("--val", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crowded", action="store_true", help="same-class objects touch much more often")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    parser.add_argument("--sheet", help="also write a contact sheet of 6 validation scenes to this PNG")
    args = parser.parse_args()
    if is_written(args.family, args.out, args.train, args.val, args.seed, args.crowded):
        print(f"{args.out} already holds these scenes")
    else:
        write_dataset(args.family, args.out, args.train, args.val, args.seed, args.crowded, args.workers)
        variant = f"{args.family}{' (crowded)' if args.crowded else ''}"
        print(f"wrote {args.train} + {args.val} {variant} scenes to {args.out}")
    if args.sheet:
        print(f"contact sheet: {contact_sheet(args.out, args.sheet)}")


if __name__ == "__main__":
    main()

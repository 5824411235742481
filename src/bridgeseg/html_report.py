"""``report.html``: one page a person can look through, written beside its thumbnails.

``Gallery`` writes, as each image is evaluated, one small JPEG strip (image | true classes |
predicted classes | true instances | found instances, ``THUMB_HEIGHT`` pixels high) under
``DIR/thumbs/`` and keeps the image's row of numbers (never its maps). ``write_html_report``
then writes ``DIR/report.html``: the summary metrics, the per-class table, the per-class chart
and training curves (PNG files embedded in the page), and the gallery of every image as JSON
that the page's own script shows ``PAGE_SIZE`` rows at a time, sorted worst first (lowest PQ,
else lowest IoU), re-sortable by each column and filtered by class. The page loads nothing from
the network; it opens from disk. The script and styles are in ``bridgeseg.html_page``.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np
from PIL import Image

from .data.io import VOID
from .files import write_text, writing
from .html_page import PAGE_TEMPLATE
from .report import class_table, headline, percent
from .visualize import instance_map_overlay, semantic_overlay

THUMB_HEIGHT = 96
MAX_PANEL_WIDTH = 192
PAGE_SIZE = 50
GAP = 2
PANELS = ("image", "true classes", "predicted classes", "true instances", "found instances")
# gallery columns: (row key, header, how the page shows it)
COLUMNS = (("iou", "IoU", "percent"), ("ap", "AP@0.5", "percent"), ("pq", "PQ", "percent"),
           ("true_instances", "true inst.", "count"), ("found_instances", "found inst.", "count"))


def instance_id_map(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool masks in descending score order -> (H, W) ids 1..K, the better mask on top."""
    out = np.zeros(shape, dtype=np.int64)
    for index in range(len(masks) - 1, -1, -1):
        out[np.asarray(masks[index], dtype=bool)] = index + 1
    return out


def _panel_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) of one thumbnail panel: ``THUMB_HEIGHT`` high, at most ``MAX_PANEL_WIDTH`` wide."""
    scale = min(THUMB_HEIGHT / height, MAX_PANEL_WIDTH / width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def _shrink(array: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    mode = Image.NEAREST if nearest else Image.BILINEAR
    if array.dtype != np.uint8:
        array = array.astype(np.int32)
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), mode))


def thumbnail_strip(image: np.ndarray, true_classes: np.ndarray, predicted_classes: np.ndarray,
                    true_instances: np.ndarray, found_masks: np.ndarray) -> Image.Image:
    """The five panels of one image side by side, drawn at thumbnail size.

    Args:
        image: (H, W, 3) uint8; true_classes, predicted_classes: (H, W) class maps (255 void);
        true_instances: (H, W) instance ids (0 none, 255 void); found_masks: (K, H, W) bool by
        descending score (K may be 0).
    """
    size = _panel_size(*image.shape[:2])
    small = _shrink(image, size, nearest=False)
    found = instance_id_map(found_masks, image.shape[:2])
    panels = [small, semantic_overlay(small, _shrink(true_classes, size, True)),
              semantic_overlay(small, _shrink(predicted_classes, size, True)),
              instance_map_overlay(small, _shrink(true_instances, size, True)),
              instance_map_overlay(small, _shrink(found, size, True))]
    strip = Image.new("RGB", (len(panels) * (size[1] + GAP) - GAP, size[0]), (255, 255, 255))
    for index, panel in enumerate(panels):
        strip.paste(Image.fromarray(panel), (index * (size[1] + GAP), 0))
    return strip


class Gallery:
    """The gallery rows of ``report.html``, one thumbnail file per image (in one process: the rows
    of other torch.distributed ranks are not gathered).

    Args:
        out_dir: the report folder (thumbnails go to ``out_dir/thumbs``).
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        with writing(self.out_dir / "thumbs"):
            (self.out_dir / "thumbs").mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []

    def add(self, name: str, image: np.ndarray, true_classes: np.ndarray, predicted_classes: np.ndarray,
            true_instances: np.ndarray | None, found_masks: np.ndarray | None, stats: dict) -> None:
        """Draw one image's thumbnails and keep its row: ``stats`` holds the ``COLUMNS`` keys (None
        where a number is undefined); the classes present in either class map are recorded for the
        class filter."""
        true_instances = np.zeros(true_classes.shape, np.int64) if true_instances is None else true_instances
        found_masks = np.zeros((0, *true_classes.shape), bool) if found_masks is None else found_masks
        relative = f"thumbs/{len(self.rows):05d}.jpg"
        strip = thumbnail_strip(image, true_classes, predicted_classes, true_instances, found_masks)
        with writing(self.out_dir / relative):
            strip.save(self.out_dir / relative, quality=85)
        present = np.union1d(np.unique(true_classes), np.unique(predicted_classes))
        classes = [int(c) for c in present if 0 <= c < VOID]
        self.rows.append({"name": str(name), "thumb": relative, "width": strip.width, "height": strip.height,
                          "classes": classes, **{key: stats.get(key) for key, _, _ in COLUMNS}})


def _embedded_png(path: Path) -> str:
    return f"data:image/png;base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _summary_html(results: dict) -> str:
    cards = "".join(f'<div class="card"><div class="value">{percent(value)}</div><div class="name">'
                    f"{html.escape(name)}</div></div>" for name, value in headline(results))
    return f'<div class="cards">{cards}</div><p class="note">All numbers in %.</p>'


def _class_table_html(results: dict, class_names: tuple[str, ...]) -> str:
    header, rows = class_table(results, class_names)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in header)
    body = "".join("<tr><td>" + html.escape(str(row[0])) + "</td>" +
                   "".join(f'<td>{html.escape(value)}</td>' if isinstance(value, str) else
                           f'<td class="num">{percent(value)}</td>' for value in row[1:]) + "</tr>" for row in rows)
    return f'<table id="classes"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_html_report(out_dir: str | Path, results: dict, class_names: tuple[str, ...], rows: list[dict],
                      title: str = "Evaluation", pictures: dict[str, Path] | None = None) -> Path:
    """Write ``out_dir/report.html``; returns its path.

    Args:
        results: the metrics (``evaluate``'s dict).
        class_names: C names.
        rows: the gallery rows (``Gallery.rows``), thumbnails relative to ``out_dir``.
        title: the page title.
        pictures: caption -> PNG file to embed (the per-class chart, the training curves); files
            that do not exist are left out.
    """
    out_dir = Path(out_dir)
    figures = "".join(f'<figure><img alt="{html.escape(caption)}" src="{_embedded_png(Path(path))}">'
                      f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                      for caption, path in (pictures or {}).items() if path is not None and Path(path).is_file())
    sort_key = "pq" if any(row.get("pq") is not None for row in rows) else "iou"
    settings = {"columns": [{"key": key, "title": title_, "kind": kind} for key, title_, kind in COLUMNS],
                "panels": list(PANELS), "classNames": list(class_names), "pageSize": PAGE_SIZE, "sortKey": sort_key}
    data = json.dumps({"settings": settings, "rows": rows}).replace("</", "<\\/")
    page = PAGE_TEMPLATE.substitute(title=html.escape(title), summary=_summary_html(results),
                                classes=_class_table_html(results, class_names), figures=figures,
                                count=len(rows), data=data)
    return write_text(out_dir / "report.html", page)

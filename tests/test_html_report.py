"""report.html as written: self-contained, small thumbnails, every image's row (the browser test opens it)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from bridgeseg.html_report import COLUMNS, Gallery, thumbnail_strip, write_html_report

NAMES = ("background", "circle", "square")


def gallery_rows(out_dir, count: int, seed: int = 0) -> Gallery:
    """``count`` random 64 x 80 block images with random numbers (some undefined) in a gallery."""
    rng = np.random.default_rng(seed)
    gallery = Gallery(out_dir)
    for index in range(count):
        image = rng.integers(0, 255, (8, 10, 3), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)  # blocks
        truth = np.zeros((64, 80), np.int64)
        truth[10:30, 10:30] = 1 + index % 2
        truth[0] = 255
        instance = (truth > 0) & (truth < 255)
        stats = {"iou": float(rng.random()), "ap": None if index % 5 == 0 else float(rng.random()),
                 "pq": float(rng.random()), "true_instances": 1, "found_instances": int(rng.integers(0, 3))}
        gallery.add(f"scene_{index:03d}", image, truth, np.roll(truth, 3, axis=1), instance.astype(np.int64),
                    instance[None], stats)
    return gallery


def page_data(path) -> dict:
    text = path.read_text()
    found = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_page_is_self_contained_with_small_thumbnails(tmp_path):
    gallery = gallery_rows(tmp_path, 7)
    chart = tmp_path / "chart.png"
    thumbnail_strip(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8)),
                    np.zeros((0, 8, 8), bool)).save(chart)
    results = {"semantic": {"pixel_accuracy": 0.9, "mean_accuracy": 0.8, "mean_iou": 0.7,
                            "per_class_iou": [0.9, 0.6, None], "per_class_accuracy": [1, 1, None], "num_images": 7}}
    path = write_html_report(tmp_path, results, NAMES, gallery.rows, "Test </script> & report",
                             {"per-class scores": chart, "training curves": tmp_path / "absent.png"})
    text = path.read_text()
    assert not re.search(r'(src|href)="(https?:)?//|url\(|@import', text), "the page must load nothing from the network"
    assert "data:image/png;base64," in text and "training curves" not in text.split("<h2>Images")[0].split(
        "<h2>Charts</h2>")[1]
    assert "Test &lt;/script&gt; &amp; report" in text
    data = page_data(path)
    assert len(data["rows"]) == 7 and data["settings"]["sortKey"] == "pq"
    assert [column["key"] for column in data["settings"]["columns"]] == [key for key, _, _ in COLUMNS]
    for row in data["rows"]:
        thumb = tmp_path / row["thumb"]
        assert thumb.is_file() and thumb.stat().st_size < 20_000
        assert row["height"] == 96 and row["classes"][0] == 0
    assert data["rows"][0]["ap"] is None  # undefined numbers stay undefined


def test_thumbnails_of_a_large_frame_stay_small(tmp_path):
    """A Cityscapes-sized frame gives 192 x 96 panels and a strip of a few tens of kilobytes."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (1024, 2048, 3), dtype=np.uint8)
    labels = rng.integers(0, 19, (1024, 2048))
    strip = thumbnail_strip(image, labels, labels, np.zeros((1024, 2048), np.int64), np.zeros((0, 1024, 2048), bool))
    assert strip.size == (5 * 192 + 4 * 2, 96)
    strip.save(tmp_path / "strip.jpg", quality=85)
    assert (tmp_path / "strip.jpg").stat().st_size < 60_000


def test_the_sort_key_falls_back_to_iou(tmp_path):
    gallery = gallery_rows(tmp_path, 2)
    for row in gallery.rows:
        row["pq"] = None
    assert page_data(write_html_report(tmp_path, {}, NAMES, gallery.rows))["settings"]["sortKey"] == "iou"


@pytest.mark.parametrize("count", [0])
def test_an_empty_gallery_still_writes_a_page(tmp_path, count):
    assert page_data(write_html_report(tmp_path, {}, NAMES, gallery_rows(tmp_path, count).rows))["rows"] == []


def test_class_tables_say_what_each_class_is_mistaken_for(tmp_path):
    """The terminal table, the Markdown report and the HTML page all name the class that takes most
    of a class's pixels, from the confusion matrix (rows ground truth)."""
    from bridgeseg.evaluation.semantic import metrics_from_confusion
    from bridgeseg.report import markdown_metrics, metrics_table

    # circle: 10 pixels, 6 right, 3 called square, 1 background -> "square 30.0"; square never wrong
    confusion = np.array([[50, 0, 0], [1, 6, 3], [0, 0, 8]])
    results = {"semantic": metrics_from_confusion(confusion, num_images=1)}
    text = metrics_table(results, NAMES)
    circle = next(line for line in text.splitlines() if line.startswith("circle"))
    assert circle.split()[-2:] == ["square", "30.0"]
    assert next(line for line in text.splitlines() if line.startswith("square ")).split()[-1] == "-"
    assert "| circle | 60.0 | square 30.0 |" in markdown_metrics(results, NAMES)
    # short class names make the column narrower than its name, which must still stand apart
    short = metrics_table(results, ("bg", "a", "b")).splitlines()
    assert next(line for line in short if line.startswith("class")).split() == ["class", "IoU", "mistaken", "for"]
    page = write_html_report(tmp_path, results, NAMES, Gallery(tmp_path).rows).read_text()
    assert "<th>mistaken for</th>" in page and "<td>square 30.0</td>" in page

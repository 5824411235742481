"""Text summaries of evaluation results (terminal tables and Markdown).

Results are the dict of ``evaluate``: ``semantic`` (mean IoU, ...), ``instance`` (mAP^r),
``panoptic`` (PQ / SQ / RQ) and ``cityscapes`` (the official Cityscapes AP), each optional.
``headline`` and ``class_table`` pick the numbers once; the text, Markdown and HTML reports only
lay them out.
"""

from __future__ import annotations

import json
from pathlib import Path


def percent(value: float | None) -> str:
    """A fraction as a percentage with one decimal; ``-`` for None."""
    return "-" if value is None else f"{100 * value:.1f}"


MISTAKEN_FOR = "mistaken for"  # the class table's one text column (``class_table``)


def cell(value: float | str | None) -> str:
    """One entry of a class table: a fraction as ``percent``, text as it is."""
    return value if isinstance(value, str) else percent(value)


def headline(results: dict) -> list[tuple[str, float | None]]:
    """The summary numbers present in ``results``: (name, fraction) pairs."""
    semantic, instance = results.get("semantic"), results.get("instance")
    panoptic, cityscapes = results.get("panoptic"), results.get("cityscapes")
    rows: list[tuple[str, float | None]] = []
    if semantic:
        rows += [("pixel acc.", semantic["pixel_accuracy"]), ("mean acc.", semantic["mean_accuracy"]),
                 ("mean IoU", semantic["mean_iou"])]
    if instance:
        rows += [("mAP^r@0.5", instance["mAP_r@0.5"]), ("mAP^r@0.7", instance["mAP_r@0.7"]),
                 ("mAP^r_vol", instance["mAP_r_vol"])]
    if panoptic:
        rows += [("PQ", panoptic["all"]["pq"]), ("SQ", panoptic["all"]["sq"]), ("RQ", panoptic["all"]["rq"]),
                 ("PQ things", panoptic["things"]["pq"]), ("PQ stuff", panoptic["stuff"]["pq"])]
    if cityscapes:
        rows += [("AP (CS)", cityscapes["AP"]), ("AP50 (CS)", cityscapes["AP50"])]
    return rows


def _entry(per_class: dict | None, name: str, key: str) -> float | None:
    value = (per_class or {}).get(name)
    return None if value is None else value[key]


def _mistaken_for_text(entry: dict | None, class_names: tuple[str, ...]) -> str:
    """``"diamond 62.5"``: the class most of a class's pixels are predicted as, and the percentage."""
    if entry is None:
        return "-"
    index = entry["class"]
    name = class_names[index] if index < len(class_names) else f"class {index}"
    return f"{name} {percent(entry['fraction'])}"


def class_table(results: dict, class_names: tuple[str, ...] | None = None) -> tuple[list[str], list[list]]:
    """Per-class columns present in ``results``: ``(header, rows)``, each row the class name then
    fractions (None where a class has no score) and, last, the text column "mistaken for" (the
    other class that takes most of the class's true pixels, with its percentage of them) where the
    semantic results have it."""
    semantic, instance = results.get("semantic"), results.get("instance")
    panoptic, cityscapes = results.get("panoptic"), results.get("cityscapes")
    if class_names is None:
        if semantic:
            class_names = tuple(f"class {i}" for i in range(len(semantic["per_class_iou"])))
        else:
            class_names = tuple((instance or panoptic or cityscapes or {}).get("per_class", {}))
    header, columns = ["class"], []
    if semantic:
        header.append("IoU")
        columns.append(lambda index, name: semantic["per_class_iou"][index])
    if instance:
        header += ["AP@0.5", "AP@0.7"]
        columns += [lambda index, name: _entry(instance["per_class"], name, "0.5"),
                    lambda index, name: _entry(instance["per_class"], name, "0.7")]
    if panoptic:
        header += ["PQ", "SQ", "RQ"]
        columns += [lambda index, name, key=key: _entry(panoptic["per_class"], name, key) for key in ("pq", "sq", "rq")]
    if cityscapes:
        header += ["AP (CS)", "AP50 (CS)"]
        columns += [lambda index, name, key=key: _entry(cityscapes["per_class"], name, key) for key in ("AP", "AP50")]
    if semantic and "per_class_mistaken_for" in semantic:
        header.append(MISTAKEN_FOR)
        columns.append(lambda index, name: _mistaken_for_text(semantic["per_class_mistaken_for"][index], class_names))
    rows = [[name] + [column(index, name) for column in columns] for index, name in enumerate(class_names)]
    return header, rows


def _num_images(results: dict) -> int:
    return next((part["num_images"] for part in results.values() if isinstance(part, dict) and "num_images" in part), 0)


def metrics_table(results: dict, class_names: tuple[str, ...] | None = None) -> str:
    """A plain-text table of ``results``: the headline numbers, then the per-class scores."""
    numbers = headline(results)
    width = max([10] + [len(name) for name, _ in numbers])
    lines = [f"{_num_images(results)} images; all numbers in %",
             "  ".join(f"{name:>{width}}" for name, _ in numbers),
             "  ".join(f"{percent(value):>{width}}" for _, value in numbers)]
    header, rows = class_table(results, class_names)
    if len(header) > 1:
        name_width = max(len(str(row[0])) for row in rows) + 2 if rows else 8
        widths = [max([10, len(header[i]) + 2] + [len(cell(row[i])) + 2 for row in rows])
                  for i in range(1, len(header))]
        lines += ["", f"{'class':<{name_width}}" + "".join(f"{name:>{w}}" for name, w in zip(header[1:], widths))]
        lines.append("-" * len(lines[-1]))
        lines += [f"{row[0]:<{name_width}}" + "".join(f"{cell(value):>{w}}" for value, w in zip(row[1:], widths))
                  for row in rows]
        if header[-1] == MISTAKEN_FOR:
            lines.append("mistaken for: the other class that most of a class's true pixels are predicted as, "
                         "and their share of them")
    return "\n".join(lines)


def markdown_metrics(results: dict, class_names: tuple[str, ...]) -> str:
    """The same content as ``metrics_table`` as Markdown tables."""
    out = ["| metric | value |", "|---|---|"] + [f"| {name} | {percent(value)} % |" for name, value in headline(results)]
    header, rows = class_table(results, class_names)
    if len(header) > 1:
        out += ["", "| " + " | ".join(header[:1] + [name if name == MISTAKEN_FOR else f"{name} %"
                                                     for name in header[1:]]) + " |",
                "|" + "---|" * len(header)]
        out += ["| " + " | ".join([str(row[0])] + [cell(value) for value in row[1:]]) + " |" for row in rows]
    return "\n".join(out)


def write_evaluation_report(results: dict, class_names: tuple[str, ...], out_dir: str | Path,
                            title: str = "Evaluation") -> Path:
    """``OUT/report.md`` (metric tables), ``OUT/class_scores.png`` (per-class bar chart) and
    ``OUT/metrics.json``; returns the report's path."""
    from .visualize import plot_class_scores

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_class_scores(results, class_names, out_dir / "class_scores.png")
    (out_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    path = out_dir / "report.md"
    path.write_text(f"# {title}\n\n{markdown_metrics(results, class_names)}\n\n"
                    "![per-class scores](class_scores.png)\n")
    return path

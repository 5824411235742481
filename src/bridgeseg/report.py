"""Text summaries of evaluation results (terminal tables and Markdown)."""

from __future__ import annotations

import json
from pathlib import Path


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def metrics_table(results: dict, class_names: tuple[str, ...] | None = None) -> str:
    """A plain-text table of ``{"semantic": {...}, "instance"?: {...}}``: the headline numbers,
    then per-class IoU (and AP at 0.5 / 0.7 when instances were evaluated)."""
    lines = []
    semantic = results.get("semantic")
    instance = results.get("instance")
    headline = []
    if semantic:
        headline += [("pixel acc.", semantic["pixel_accuracy"]), ("mean acc.", semantic["mean_accuracy"]),
                     ("mean IoU", semantic["mean_iou"])]
    if instance:
        headline += [("mAP^r@0.5", instance["mAP_r@0.5"]), ("mAP^r@0.7", instance["mAP_r@0.7"]),
                     ("mAP^r_vol", instance["mAP_r_vol"])]
    images = (semantic or instance or {}).get("num_images", 0)
    lines.append(f"{images} images; all numbers in %")
    lines.append("  ".join(f"{name:>10}" for name, _ in headline))
    lines.append("  ".join(f"{_percent(value):>10}" for _, value in headline))
    if semantic:
        names = class_names or tuple(f"class {i}" for i in range(len(semantic["per_class_iou"])))
        per_class_ap = (instance or {}).get("per_class", {})
        width = max(len(name) for name in names) + 2
        header = f"{'class':<{width}}{'IoU':>7}" + (f"{'AP@0.5':>9}{'AP@0.7':>9}" if instance else "")
        lines += ["", header, "-" * len(header)]
        for index, name in enumerate(names):
            row = f"{name:<{width}}{_percent(semantic['per_class_iou'][index]):>7}"
            if instance and index > 0:
                ap = per_class_ap.get(name)
                row += f"{_percent(ap['0.5'] if ap else None):>9}{_percent(ap['0.7'] if ap else None):>9}"
            lines.append(row)
    return "\n".join(lines)


def markdown_metrics(results: dict, class_names: tuple[str, ...]) -> str:
    """The same content as ``metrics_table`` as Markdown tables."""
    semantic, instance = results.get("semantic"), results.get("instance")
    out = ["| metric | value |", "|---|---|"]
    if semantic:
        out += [f"| pixel accuracy | {_percent(semantic['pixel_accuracy'])} % |",
                f"| mean accuracy | {_percent(semantic['mean_accuracy'])} % |",
                f"| mean IoU | {_percent(semantic['mean_iou'])} % |"]
    if instance:
        out += [f"| mAP^r@0.5 | {_percent(instance['mAP_r@0.5'])} % |",
                f"| mAP^r@0.7 | {_percent(instance['mAP_r@0.7'])} % |",
                f"| mAP^r_vol | {_percent(instance['mAP_r_vol'])} % |"]
    if semantic:
        out += ["", "| class | IoU % |" + (" AP@0.5 % | AP@0.7 % |" if instance else ""),
                "|---|---|" + ("---|---|" if instance else "")]
        for index, name in enumerate(class_names):
            row = f"| {name} | {_percent(semantic['per_class_iou'][index])} |"
            if instance:
                ap = instance["per_class"].get(name) if index > 0 else None
                row += f" {_percent(ap['0.5'] if ap else None)} | {_percent(ap['0.7'] if ap else None)} |"
            out.append(row)
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

"""Pictures: colour-coded label maps, overlays, instance outlines, training curves."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .data.io import VOID, voc_palette


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours (VOC palette; void drawn in its cream colour)."""
    palette = voc_palette() if palette is None else palette
    return palette[np.clip(np.asarray(label), 0, len(palette) - 1)]


def blend(image: np.ndarray, colors: np.ndarray, mask: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Mix ``colors`` into ``image`` where ``mask`` holds; (H, W, 3) uint8 in and out."""
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * colors[mask].astype(np.float32)
    return out.astype(np.uint8)


def semantic_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with foreground classes tinted in their palette colours."""
    label = np.asarray(label)
    return blend(image, colorize(label), (label > 0) & (label != VOID), alpha)


def instance_colors(count: int, seed: int = 3) -> np.ndarray:
    """``count`` well-spread, saturated colours, (count, 3) uint8."""
    hues = (np.arange(count) * 0.618033988749895 + np.random.default_rng(seed).random()) % 1.0
    rgb = []
    for hue in hues:
        k = (np.array([5.0, 3.0, 1.0]) + hue * 6) % 6
        rgb.append(255 * (1 - 0.85 * np.clip(np.minimum(k, 4 - k), 0, 1)))
    return np.array(rgb, dtype=np.uint8).reshape(count, 3)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` that touch a pixel outside it (4-neighbourhood)."""
    padded = np.pad(mask, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def instance_overlay(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with one colour per instance and its outline; masks (K, H, W) bool."""
    out = image.copy()
    colors = instance_colors(len(masks))
    for mask, color in zip(masks, colors):
        layer = np.broadcast_to(color, out.shape)
        out = blend(out, layer, mask, alpha)
        out[mask_outline(mask)] = color
    return out


def instance_map_overlay(image: np.ndarray, instance_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``instance_overlay`` of an instance-id map (0 background, 255 void)."""
    ids = [i for i in np.unique(instance_map) if i not in (0, VOID)]
    return instance_overlay(image, np.stack([instance_map == i for i in ids]) if ids
                            else np.zeros((0, *instance_map.shape), bool), alpha)


def panel(images: list[np.ndarray], titles: list[str], scale: int = 1, gap: int = 4) -> Image.Image:
    """Side-by-side pictures with a caption above each; all (H, W, 3) uint8 of one size."""
    height, width = images[0].shape[:2]
    height, width = height * scale, width * scale
    caption = 14
    canvas = Image.new("RGB", (len(images) * (width + gap) - gap, height + caption), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (picture, title) in enumerate(zip(images, titles)):
        x = index * (width + gap)
        tile = Image.fromarray(picture).resize((width, height), Image.NEAREST)
        canvas.paste(tile, (x, caption))
        draw.text((x + 2, 1), title, fill=(0, 0, 0))
    return canvas


def legend(class_names: tuple[str, ...], width: int, class_ids: list[int] | None = None) -> Image.Image | None:
    """A white strip with the palette colour and name of each class of ``class_ids`` (default: every
    foreground class); None when there is none to show."""
    class_ids = list(range(1, len(class_names))) if class_ids is None else list(class_ids)
    if not class_ids:
        return None
    palette = voc_palette()
    per_row = max(1, width // 100)
    rows = -(-len(class_ids) // per_row)
    canvas = Image.new("RGB", (width, 16 * rows + 2), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for n, index in enumerate(class_ids):
        x, y = (n % per_row) * 100 + 2, (n // per_row) * 16 + 2
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(int(c) for c in palette[index]))
        draw.text((x + 14, y + 1), str(class_names[index])[:13], fill=(0, 0, 0))
    return canvas


def stack_vertically(pictures: list[Image.Image], gap: int = 6) -> Image.Image:
    width = max(p.width for p in pictures)
    canvas = Image.new("RGB", (width, sum(p.height for p in pictures) + gap * (len(pictures) - 1)), (255, 255, 255))
    y = 0
    for picture in pictures:
        canvas.paste(picture, (0, y))
        y += picture.height + gap
    return canvas


def read_metrics_log(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training_curves(log_path: str | Path, out_path: str | Path) -> Path | None:
    """Loss, learning rate and validation metrics against the step, from a ``metrics.jsonl``."""
    records = read_metrics_log(log_path)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [r["step"] for r in train]
    for key in sorted({k for r in train for k in r if k.startswith("loss")}):
        axes[0].plot(steps, [r.get(key, np.nan) for r in train], label=key.replace("loss_", ""))
    axes[0].set(title="training loss", xlabel="step", yscale="log")
    axes[0].legend()
    axes[1].plot(steps, [r["lr"] for r in train])
    axes[1].set(title="learning rate (backbone)", xlabel="step")
    if evals:
        eval_steps = [r["step"] for r in evals]
        axes[2].plot(eval_steps, [r["eval"]["semantic"]["mean_iou"] for r in evals], "o-", label="mean IoU")
        if all("instance" in r["eval"] for r in evals):
            axes[2].plot(eval_steps, [r["eval"]["instance"]["mAP_r@0.5"] for r in evals], "s-", label="mAP^r@0.5")
        axes[2].set(ylim=(0, 1))
        axes[2].legend()
    axes[2].set(title="validation", xlabel="step")
    for axis in axes:
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=110)
    plt.close(figure)
    return Path(out_path)


def _per_class_values(part: dict | None, class_names: tuple[str, ...], key: str) -> list[float] | None:
    """Percentages of one per-class score (``part["per_class"][name][key]``), NaN where undefined."""
    if not part:
        return None
    per_class = part.get("per_class", {})
    return [np.nan if (per_class.get(name) or {}).get(key) is None else 100 * per_class[name][key]
            for name in class_names]


def plot_class_scores(results: dict, class_names: tuple[str, ...], out_path: str | Path) -> Path:
    """A horizontal bar chart of per-class IoU (and AP^r at 0.5 when instances were evaluated, PQ
    when panoptic quality was).

    Classes without ground truth or prediction (IoU undefined) are drawn as an empty row marked
    "n/a"; the dashed line is the mean IoU.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    semantic = results["semantic"]
    ious = [np.nan if value is None else 100 * value for value in semantic["per_class_iou"]]
    rows = np.arange(len(class_names))
    colors = colorize(rows) / 255.0
    series = [("IoU", ious, {"color": colors, "edgecolor": "black", "linewidth": 0.4})]
    for label, values, style in (
            ("AP^r@0.5", _per_class_values(results.get("instance"), class_names, "0.5"), {"hatch": "///"}),
            ("PQ", _per_class_values(results.get("panoptic"), class_names, "pq"), {"hatch": "..."})):
        if values is not None:
            series.append((label, values, {"color": "white", "edgecolor": colors, "linewidth": 0.8, **style}))
    figure, axis = plt.subplots(figsize=(7, 0.32 * len(class_names) * (1 + 0.3 * (len(series) - 1)) + 1.2))
    height = 0.8 / len(series)
    for number, (label, values, style) in enumerate(series):
        axis.barh(rows + (number - (len(series) - 1) / 2) * height, np.nan_to_num(values), height, label=label,
                  **style)
    for row, value in zip(rows, ious):
        axis.text((0 if np.isnan(value) else value) + 1, row, "n/a" if np.isnan(value) else f"{value:.1f}",
                  va="center", fontsize=7)
    if semantic.get("mean_iou") is not None:
        axis.axvline(100 * semantic["mean_iou"], color="gray", linestyle="--", linewidth=1,
                     label=f"mean IoU {100 * semantic['mean_iou']:.1f}")
    axis.set(yticks=rows, yticklabels=class_names, xlim=(0, 105), xlabel="%", title="per-class scores")
    axis.invert_yaxis()
    axis.legend(loc="lower right", fontsize=7)
    axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(out_path, dpi=110)
    plt.close(figure)
    return Path(out_path)

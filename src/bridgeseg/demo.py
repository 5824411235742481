"""``bridgeseg demo``: the whole method on the embedded synthetic dataset, on a CPU, in minutes.

Generates the dataset (VOC layout) under ``OUT/data``, trains the shipped config
``configs/demo.yaml`` on it into ``OUT/run`` within a time budget, evaluates the validation split
(mean IoU, mAP^r, PQ) with a gallery of every image, and writes ``OUT/report.html`` (the page to
look at), ``OUT/metrics.json``, overlay pictures under ``OUT/overlays/`` and ``OUT/report.md``.
Nothing here is special to the demo: ``bridgeseg train configs/demo.yaml --data-root DIR`` runs
the same recipe on any dataset in the VOC layout, and ``bridgeseg evaluate ... --report DIR``
writes the same report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from .config import load_config, packaged_config_dir
from .data.loading import build_dataset, evaluation_loader
from .data.synthetic import TRAIN_IMAGES, VAL_IMAGES, generate_dataset, is_generated
from .distributed import resolve_device
from .engine.evaluate import evaluate_model, write_reports
from .engine.train import train
from .html_report import Gallery
from .predictor import Predictor
from .report import markdown_metrics, metrics_table
from .visualize import colorize, instance_map_overlay, instance_overlay, panel, semantic_overlay, stack_vertically

OVERLAY_COUNT = 8
MINUTES = 8.0  # the default training budget
REFERENCE_STEPS_PER_MINUTE = 500  # README "Demo results": the config's 4,000-step cap in the 8 minutes (a bf16 2-core CPU: 4.6 min; a float32 one: 3,256 steps)


def draw_overlays(predictor: Predictor, config, out_dir: Path, count: int = OVERLAY_COUNT) -> list[Path]:
    """Pictures of ``count`` validation images: image | ground truth | prediction (semantic, then
    instances when the model has a localization head), predicted with the config's test views.
    Returns the files written."""
    dataset = build_dataset(config.data, config.data.validation_split, with_instances=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, paths = [], []
    for index in range(min(count, len(dataset))):
        sample = dataset[index]
        image = sample["image"]
        prediction = predictor(image)
        pictures = [image, semantic_overlay(image, sample["semantic"]), semantic_overlay(image, prediction.semantic)]
        titles = ["image", "truth", "prediction"]
        if prediction.instances is not None:
            pictures += [instance_map_overlay(image, sample["instance"]),
                         instance_overlay(image, prediction.instances.masks.numpy())]
            titles += ["true instances", f"found: {len(prediction.instances)}"]
        row = panel(pictures, titles, scale=max(1, 192 // image.shape[0]))
        path = out_dir / f"{sample['name']}.png"
        row.save(path)
        rows.append(row)
        paths.append(path)
    if rows:
        stack_vertically(rows).save(out_dir.parent / "overlays.png")
    return paths


def evaluate_for_report(predictor: Predictor, config, out_dir: Path, progress: bool) -> tuple[dict, Gallery]:
    """The validation split through ``evaluate_model`` with every metric and a gallery in ``out_dir``."""
    dataset = build_dataset(config.data, config.data.validation_split, with_instances=True)
    gallery = Gallery(out_dir)
    metrics = evaluate_model(predictor, evaluation_loader(config.data, dataset, device_type=predictor.device.type),
                             predictor.class_names,
                             predictor.instance_config, config.eval.protocol, progress=progress,
                             thing_classes=dataset.thing_classes, panoptic_min_area=config.eval.panoptic_min_area,
                             gallery=gallery)
    return metrics, gallery


def run_demo(out_dir: str | Path = "demo-output", minutes: float = MINUTES, num_train: int = TRAIN_IMAGES,
             num_val: int = VAL_IMAGES, progress: bool = True) -> dict:
    """Run the demo; returns the metrics dict written to ``OUT/metrics.json``."""
    out_dir = Path(out_dir)
    started = time.perf_counter()
    data_root = out_dir / "data"
    if not is_generated(data_root, num_train, num_val):
        print(f"[1/4] generating the synthetic dataset in {data_root}")
        generate_dataset(data_root, num_train, num_val, progress=progress)
    else:
        print(f"[1/4] using the synthetic dataset in {data_root}")
    config_path = packaged_config_dir() / "demo.yaml"
    config = load_config(config_path, {"data.root": str(data_root), "train.time_limit_minutes": minutes})
    run_dir = out_dir / "run"
    for stale in ("metrics.jsonl", "last.pt", "final.pt"):
        (run_dir / stale).unlink(missing_ok=True)
    print(f"[2/4] training {config_path.name} ({config.model.arch}, ResNet-{config.model.depth}, "
          f"OS {config.model.output_stride}, maps at stride {config.model.prediction_stride}) for at most "
          f"{minutes:g} min into {run_dir}")
    result = train(config, run_dir, resume=False, progress=progress)

    print("[3/4] evaluating the validation split for the report (mean IoU, mAP^r, PQ, every image)")
    predictor = Predictor.from_checkpoint(result.checkpoint, device=resolve_device(config.train.device))
    class_names = predictor.class_names
    metrics, gallery = evaluate_for_report(predictor, config, out_dir, progress)
    overlays = draw_overlays(predictor, config, out_dir / "overlays")

    print("[4/4] writing the report")
    page = write_reports(metrics, class_names, out_dir, gallery.rows,
                         f"bridgeseg demo: {result.steps} training steps, {len(gallery.rows)} validation images",
                         curves=run_dir / "curves.png")
    report = out_dir / "report.md"
    report.write_text(demo_report(metrics, class_names, result, overlays, out_dir))
    seconds = time.perf_counter() - started
    print()
    print(metrics_table(metrics, class_names))
    print(f"\ndemo finished in {seconds / 60:.1f} min ({result.steps} training steps in "
          f"{result.seconds / 60:.1f} min). Open the report in a browser:\n  {page}\nand look at:")
    for path in (out_dir / "overlays.png", out_dir / "class_scores.png", run_dir / "curves.png", report,
                 out_dir / "metrics.json"):
        print(f"  {path}")
    hint = slow_machine_hint(result.steps, minutes)
    if hint:
        print("\n" + hint)
    return metrics


def slow_machine_hint(steps: int, minutes: float) -> str | None:
    """A note when training ran far fewer steps than the README's figures took (a slower machine
    or a shorter budget), with the ``--minutes`` that would match them; None otherwise."""
    expected = REFERENCE_STEPS_PER_MINUTE * MINUTES
    if steps >= 0.8 * expected:
        return None
    needed = math.ceil(minutes * expected / max(steps, 1))
    return (f"note: {steps} training steps is well short of the ~{expected:,.0f} behind the README's figures "
            f"(2-core CPU, {MINUTES:g} min), so the scores are lower. `bridgeseg demo --minutes {needed}` gives this machine "
            "about as many.")


def demo_report(metrics: dict, class_names: tuple[str, ...], result, overlays: list[Path], out_dir: Path) -> str:
    legend = ", ".join(f"{name} = {tuple(int(c) for c in colorize(np.array([i]))[0])}"
                       for i, name in enumerate(class_names) if i > 0)
    lines = [
        "# bridgeseg demo report", "",
        f"Trained `configs/demo.yaml` for {result.steps} steps ({result.seconds / 60:.1f} min) on the synthetic "
        f"shapes dataset; evaluated on its {metrics['semantic']['num_images']} validation images. Every one of "
        "them, worst first, is in the browsable [report.html](report.html).", "",
        markdown_metrics(metrics, class_names), "",
        "![per-class scores](class_scores.png)", "",
        "## Training curves", "", "![curves](run/curves.png)", "",
        "## Validation images", "",
        "Each row: image | ground truth | prediction (class colours: " + legend + ")"
        + (" | true instances | found instances (one colour each)." if "instance" in metrics else "."), "",
        "![overlays](overlays.png)", "",
    ]
    lines += [f"- [{path.stem}]({path.relative_to(out_dir)})" for path in overlays]
    return "\n".join(lines) + "\n"

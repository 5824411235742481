"""The demo recipe on scenes it was not tuned on: generate, train, evaluate, compare with
connected components.

    .venv/bin/python benchmarks/unseen_data.py [--families rings rings-crowded textured cells glyphs]
        [--steps 2000 | --minutes 8] [--train-images 800] [--val-images 100] [--set KEY=VALUE ...]
        [--out /tmp/bridgeseg-unseen] [--config configs/demo.yaml] [--overlays 6]

For each family of ``benchmarks/scenes.py`` (a ``-crowded`` suffix selects its crowded variant) it
writes the scenes under ``OUT/data/<family>`` (kept when already written with the same arguments)
and runs, in ``OUT/runs/<family>_...``::

    bridgeseg train CONFIG --data-root DATA --out RUN \
        --set train.iterations=STEPS train.time_limit_minutes=0 [--set ...]
    bridgeseg evaluate CONFIG --data-root DATA --checkpoint RUN/final.pt --json RUN/eval.json
    bridgeseg predict-dataset CONFIG --data-root DATA --checkpoint RUN/final.pt --out RUN/pred --format voc

(the run folder's name holds a digest of the config file's text and the ``--set`` list, so a stage
whose outputs exist from the same command and the same config is not run again; the commands get
``OMP_NUM_THREADS`` from the environment, default 2: on a machine shared with other jobs, 1 can be
far faster). With
``train.time_limit_minutes=0`` the poly schedule decays over exactly STEPS steps; 2000 is what a
slow two-core machine reaches in the demo's 8 minutes. ``--minutes M`` trains as ``make demo``
does instead: ``train.time_limit_minutes=M`` with the config's own step cap, so the figures are
those of this machine's speed (run nothing else beside it), and the table gives the steps reached.

Besides the recipe's own mean IoU and mAP^r it reports two connected-components baselines, scored
with the same ``InstanceEvaluator``: the 8-connected components of each foreground class in the
network's predicted class map (from ``predict-dataset``, so the same multi-view testing as
``evaluate``), and the same on the ground-truth class map (its void band first filled with the
class of the nearest labelled pixel, as in a prediction: the ceiling of that baseline). Each
component's score is its area as a fraction of the image, so larger components rank first. And
what the output stride leaves of perfect maps: ground-truth class scores and box transforms sampled
every ``model.prediction_stride`` pixels, grouped with the config's ``instance:`` settings (cf.
``benchmarks/output_stride_ceiling.py``). The "rarest" class is the one with the fewest instances
in the training labels.

Results: one table on the terminal, the same as JSON in ``OUT/results.json`` (``--json``), and
with ``--overlays K`` a sheet ``OUT/overlays_<family>.png`` of K validation scenes per family
(image | ground-truth instances | ``bridgeseg predict`` overlay).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes  # noqa: E402  (benchmarks/scenes.py, next to this file)

from bridgeseg.components import void_filled  # noqa: E402
from bridgeseg.data.instances import instances_from_maps  # noqa: E402
from bridgeseg.data.io import read_label  # noqa: E402
from bridgeseg.evaluation.instance import InstanceEvaluator  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
BRIDGESEG = REPOSITORY / ".venv" / "bin" / "bridgeseg"
DEFAULT_FAMILIES = ("rings", "rings-crowded", "textured", "cells", "glyphs")
CROWDED_SUFFIX = "-crowded"


# --------------------------------------------------------------------------------------------
# Data.


def parse_variant(variant: str) -> tuple[str, bool]:
    """``"rings-crowded"`` -> ``("rings", True)``; the family must be one of ``scenes.GENERATORS``."""
    family = variant.removesuffix(CROWDED_SUFFIX)
    if family not in scenes.GENERATORS:
        raise SystemExit(f"unknown family {variant!r}; choose from {sorted(scenes.GENERATORS)}, "
                         f"each optionally with {CROWDED_SUFFIX!r}")
    return family, variant.endswith(CROWDED_SUFFIX)


def ensure_dataset(variant: str, root: Path, num_train: int, num_val: int, seed: int) -> Path:
    """The scenes of ``variant`` under ``root``, written unless already there with these arguments."""
    family, crowded = parse_variant(variant)
    if scenes.is_written(family, root, num_train, num_val, seed, crowded):
        return root
    print(f"[{variant}] writing {num_train} + {num_val} scenes to {root}", flush=True)
    return scenes.write_dataset(family, root, num_train, num_val, seed, crowded, workers=2)


def split_ids(root: Path, split: str) -> list[str]:
    return (root / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()


def read_class_names(root: Path) -> list[str]:
    return [line.strip() for line in (root / "classes.txt").read_text().splitlines() if line.strip()]


def ground_truth(root: Path, name: str, num_classes: int):
    """(semantic (H, W) int64, instance masks (G, H, W), labels (G,), void (H, W)) of one scene."""
    semantic = read_label(root / "SegmentationClass" / f"{name}.png")
    instance = read_label(root / "SegmentationObject" / f"{name}.png")
    masks, labels, void = instances_from_maps(torch.from_numpy(instance), torch.from_numpy(semantic), num_classes)
    return semantic, masks, labels, void


def instance_counts(root: Path, split: str = "train") -> list[int]:
    """Instances per class (background's entry 0) in the labels of ``split``; cached in the root."""
    cache = root / f"instance_counts_{split}.json"
    if cache.is_file() and cache.stat().st_mtime >= (root / scenes.RECORD_FILE).stat().st_mtime:
        return json.loads(cache.read_text())
    num_classes = len(read_class_names(root))
    counts = np.zeros(num_classes, dtype=np.int64)
    for name in split_ids(root, split):
        _, _, labels, _ = ground_truth(root, name, num_classes)
        counts += np.bincount(labels.numpy(), minlength=num_classes)
    cache.write_text(json.dumps(counts.tolist()))
    return counts.tolist()


# --------------------------------------------------------------------------------------------
# Running bridgeseg.


def run_stage(run_dir: Path, stage: str, command: list[str], outputs: list[Path]) -> float:
    """Run ``command`` (log in ``RUN/<stage>.log``) unless ``RUN/stages.json`` records the same
    command and its ``outputs`` exist; returns its wall-clock minutes (the recorded ones if skipped)."""
    record_path = run_dir / "stages.json"
    records = json.loads(record_path.read_text()) if record_path.is_file() else {}
    done = records.get(stage)
    if done and done["command"] == command and all(path.exists() for path in outputs):
        return done["minutes"]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           "MKL_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    print(f"  $ {' '.join(command)}", flush=True)
    start = time.perf_counter()
    with open(run_dir / f"{stage}.log", "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPOSITORY)
    minutes = (time.perf_counter() - start) / 60
    if result.returncode != 0:
        tail = (run_dir / f"{stage}.log").read_text()[-2000:]
        raise SystemExit(f"{stage} failed (exit {result.returncode}); end of {run_dir / stage}.log:\n{tail}")
    records[stage] = {"command": command, "minutes": minutes}
    record_path.write_text(json.dumps(records, indent=2) + "\n")
    return minutes


def run_name(variant: str, args: argparse.Namespace) -> str:
    """A run folder per (family, data size, steps, the config file's text, --set): changing one,
    editing the config included, starts a fresh run."""
    recipe = [Path(args.config).read_text(), args.set]
    digest = hashlib.sha1(json.dumps(recipe).encode()).hexdigest()
    budget = f"m{args.minutes:g}" if args.minutes else f"s{args.steps}"
    return f"{variant}_n{args.train_images}_{budget}_{digest[:8]}"


def train_and_evaluate(data: Path, run_dir: Path, args: argparse.Namespace) -> dict:
    """Train, evaluate and predict the validation split; returns minutes of each stage."""
    config, checkpoint = str(args.config), str(run_dir / "final.pt")
    budget = ([f"train.time_limit_minutes={args.minutes:g}"] if args.minutes
              else [f"train.iterations={args.steps}", "train.time_limit_minutes=0"])
    train = [str(BRIDGESEG), "train", config, "--data-root", str(data), "--out", str(run_dir),
             "--set", *budget, *args.set]
    evaluate = [str(BRIDGESEG), "evaluate", config, "--data-root", str(data), "--checkpoint", checkpoint,
                "--json", str(run_dir / "eval.json")]
    predict = [str(BRIDGESEG), "predict-dataset", config, "--data-root", str(data), "--checkpoint", checkpoint,
               "--out", str(run_dir / "pred"), "--format", "voc"]
    if args.set:  # the recipe change may touch evaluation (eval.*, instance.*) too
        evaluate += ["--set", *args.set]
        predict += ["--set", *args.set]
    return {"train": run_stage(run_dir, "train", train, [run_dir / "final.pt"]),
            "evaluate": run_stage(run_dir, "evaluate", evaluate, [run_dir / "eval.json"]),
            "predict": run_stage(run_dir, "predict", predict, [run_dir / "pred"])}


def steps_reached(run_dir: Path) -> int:
    """The step of the final record of ``RUN/metrics.jsonl``."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return int(lines[-1]["step"])


# --------------------------------------------------------------------------------------------
# Connected components baseline.


def connected_components(semantic: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of each foreground class: (masks (P, H, W), labels (P,), scores (P,)),
    each scored by its area as a fraction of the image."""
    masks, labels = [], []
    for label in range(1, num_classes):
        components, count = scipy.ndimage.label(semantic == label, structure=np.ones((3, 3)))
        for index in range(1, count + 1):
            masks.append(components == index)
            labels.append(label)
    if not masks:
        return np.zeros((0, *semantic.shape), bool), np.zeros(0, np.int64), np.zeros(0)
    masks = np.stack(masks)
    return masks, np.asarray(labels), masks.reshape(len(masks), -1).mean(axis=1)


def components_map_r(data: Path, predictions: Path | None, class_names: list[str]) -> dict:
    """mAP^r of connected components of the predicted class maps (``predictions/<id>.png``) or,
    with ``predictions=None``, of the ground-truth class maps, on the validation split."""
    evaluator = InstanceEvaluator(class_names)
    for name in split_ids(data, "val"):
        semantic, gt_masks, gt_labels, void = ground_truth(data, name, len(class_names))
        source = void_filled(semantic) if predictions is None else read_label(predictions / f"{name}.png")
        masks, labels, scores = connected_components(source, len(class_names))
        evaluator.process(masks, labels, scores, gt_masks, gt_labels, void)
    result = evaluator.evaluate()
    return {"mAP_r@0.5": result["mAP_r@0.5"], "mAP_r@0.7": result["mAP_r@0.7"]}


def stride_ceiling(data: Path, config_path: Path, overrides: list[str], class_names: list[str]) -> dict:
    """Mean IoU and mAP^r of ground-truth class scores and box transforms sampled on the network's
    output grid (every ``model.prediction_stride`` pixels) and grouped with the run's ``instance:``
    settings, on the validation split: what the output stride leaves of perfect maps (as
    ``benchmarks/output_stride_ceiling.py`` measures for the demo's scenes). Not a strict upper
    bound: a network's smooth scores can place boundaries better than sampled one-hot maps."""
    from bridgeseg.config import load_config  # the internals of one experiment, imported here only
    from bridgeseg.evaluation.semantic import SemanticEvaluator
    from bridgeseg.geometry import resize_to_input
    from bridgeseg.grouping import group_instances
    from bridgeseg.oracle import oracle_probabilities, oracle_transforms

    config = load_config(config_path, overrides)
    stride, num_classes = config.model.prediction_stride, len(class_names)
    semantic_evaluator, instance_evaluator = SemanticEvaluator(num_classes), InstanceEvaluator(class_names)
    for name in split_ids(data, "val"):
        semantic = torch.from_numpy(read_label(data / "SegmentationClass" / f"{name}.png"))
        instance = torch.from_numpy(read_label(data / "SegmentationObject" / f"{name}.png"))
        size = tuple(semantic.shape)
        probs = oracle_probabilities(semantic, num_classes, stride)
        semantic_evaluator.process(resize_to_input(probs[None], size, stride).argmax(1)[0], semantic)
        found = group_instances(probs, oracle_transforms(instance, semantic, num_classes, stride), stride, size,
                                config.instance)
        instance_evaluator.process(found.masks, found.labels, found.scores,
                                   *instances_from_maps(instance, semantic, num_classes))
    instances = instance_evaluator.evaluate()
    return {"stride": stride, "mean_iou": semantic_evaluator.evaluate()["mean_iou"],
            "mAP_r@0.5": instances["mAP_r@0.5"], "mAP_r@0.7": instances["mAP_r@0.7"]}


# --------------------------------------------------------------------------------------------
# One family, the table, the overlays.


def measure(variant: str, args: argparse.Namespace) -> dict:
    """Everything the table shows for one family (running whatever has not run yet)."""
    data = ensure_dataset(variant, args.out / "data" / variant, args.train_images, args.val_images, args.seed)
    run_dir = args.out / "runs" / run_name(variant, args)
    print(f"[{variant}] run {run_dir}", flush=True)
    minutes = train_and_evaluate(data, run_dir, args)
    metrics = json.loads((run_dir / "eval.json").read_text())
    class_names = read_class_names(data)
    counts = instance_counts(data)
    rarest = 1 + int(np.argmin(counts[1:]))
    per_class_iou = metrics["semantic"]["per_class_iou"]
    return {
        "family": variant, "run": str(run_dir), "data": str(data), "steps": steps_reached(run_dir),
        "train_minutes": minutes["train"], "minutes": sum(minutes.values()),
        "mean_iou": metrics["semantic"]["mean_iou"],
        "rarest_class": class_names[rarest], "rarest_train_instances": counts[rarest],
        "rarest_iou": per_class_iou[rarest],
        "per_class_iou": dict(zip(class_names, per_class_iou)),
        "mistaken_for": {name: None if entry is None else [class_names[entry["class"]], entry["fraction"]]
                         for name, entry in zip(class_names, metrics["semantic"].get("per_class_mistaken_for", []))},
        "train_instances": dict(zip(class_names[1:], counts[1:])),
        "mAP_r@0.5": metrics["instance"]["mAP_r@0.5"], "mAP_r@0.7": metrics["instance"]["mAP_r@0.7"],
        "per_class_ap@0.5": {name: None if ap is None else ap["0.5"]
                             for name, ap in metrics["instance"]["per_class"].items()},
        "cc_predicted": components_map_r(data, run_dir / "pred", class_names),
        "cc_ground_truth": components_map_r(data, None, class_names),
        "stride_ceiling": stride_ceiling(data, args.config, args.set, class_names),
    }


def percent(value: float | None) -> str:
    return "  -" if value is None or value != value else f"{100 * value:5.1f}"


def format_table(rows: list[dict]) -> str:
    """The results as a text table (metrics in %; minutes of training and of training + evaluate +
    predict-dataset; CCpred / CCgt: connected components of the predicted / true class maps; OSgt:
    true maps sampled at the output stride), per-class IoU, AP@0.5, training instances and the class
    each class's pixels are most often predicted as below."""
    header = (f"{'family':<14} {'steps':>5} {'train':>5} {'total':>5} {'mIoU':>5} {'rarest (IoU)':>19}"
              f" {'AP@.5':>5} {'AP@.7':>5} | {'CCpred@.5':>9} {'@.7':>5} | {'CCgt@.5':>7} {'@.7':>5}"
              f" | {'OSgt mIoU':>9} {'@.5':>5} {'@.7':>5}")
    lines = [header, "-" * len(header)]
    for row in rows:
        rarest = f"{row['rarest_class']} {percent(row['rarest_iou']).strip()}"
        cc_pred, cc_gt, ceiling = row["cc_predicted"], row["cc_ground_truth"], row["stride_ceiling"]
        lines.append(f"{row['family']:<14} {row['steps']:>5} {row['train_minutes']:5.1f} {row['minutes']:5.1f}"
                     f" {percent(row['mean_iou'])}"
                     f" {rarest:>19} {percent(row['mAP_r@0.5'])} {percent(row['mAP_r@0.7'])}"
                     f" | {percent(cc_pred['mAP_r@0.5']):>9} {percent(cc_pred['mAP_r@0.7'])}"
                     f" | {percent(cc_gt['mAP_r@0.5']):>7} {percent(cc_gt['mAP_r@0.7'])}"
                     f" | {percent(ceiling['mean_iou']):>9} {percent(ceiling['mAP_r@0.5'])}"
                     f" {percent(ceiling['mAP_r@0.7'])}")
    lines.append("")
    for row in rows:
        ious = ", ".join(f"{name} {percent(iou).strip()}" for name, iou in row["per_class_iou"].items())
        aps = ", ".join(f"{name} {percent(ap).strip()}" for name, ap in row["per_class_ap@0.5"].items())
        counts = ", ".join(f"{name} {count}" for name, count in row["train_instances"].items())
        indent = " " * len(row["family"])
        lines += [f"{row['family']}: IoU   {ious}", f"{indent}  AP@.5 {aps}", f"{indent}  train instances {counts}"]
        mistaken = [f"{name} as {entry[0]} {percent(entry[1]).strip()}"
                    for name, entry in row.get("mistaken_for", {}).items() if entry is not None and name != "background"]
        if mistaken:
            lines.append(f"{indent}  mistaken for (share of the class's pixels) {', '.join(mistaken)}")
    return "\n".join(lines)


def overlay_sheet(row: dict, count: int, out: Path) -> Path:
    """``bridgeseg predict`` on the first ``count`` validation scenes; a sheet of image | ground-truth
    instances | predicted overlay (class tint, instance outlines, legend), one row per scene."""
    data, run_dir = Path(row["data"]), Path(row["run"])
    names = split_ids(data, "val")[:count]
    predicted = run_dir / "overlays"
    images = [str(data / "JPEGImages" / f"{name}.jpg") for name in names]
    run_stage(run_dir, "overlays", [str(BRIDGESEG), "predict", "--checkpoint", str(run_dir / "final.pt"),
                                    *images, "--out", str(predicted)],
              [predicted / f"{name}_overlay.png" for name in names])
    rows = []
    for name in names:
        image = Image.open(data / "JPEGImages" / f"{name}.jpg").convert("RGB")
        truth = Image.fromarray(scenes.colored(read_label(data / "SegmentationObject" / f"{name}.png")))
        overlay = Image.open(predicted / f"{name}_overlay.png").convert("RGB")
        pictures = [image, truth, overlay]
        canvas = Image.new("RGB", (sum(p.width for p in pictures) + 8, max(p.height for p in pictures)), "white")
        x = 0
        for picture in pictures:
            canvas.paste(picture, (x, 0))
            x += picture.width + 4
        rows.append(canvas)
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height + 4 for r in rows)), "white")
    y = 0
    for canvas in rows:
        sheet.paste(canvas, (0, y))
        y += canvas.height + 4
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)
    sheet.save(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(DEFAULT_FAMILIES),
                        help=f"scene families, optionally with {CROWDED_SUFFIX!r} (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=2000, help="training steps (default: %(default)s)")
    parser.add_argument("--minutes", type=float, default=0,
                        help="train for this many minutes with the config's step cap instead of --steps")
    parser.add_argument("--train-images", type=int, default=800)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0, help="scene seed")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides passed to train (and evaluate, predict-dataset)")
    parser.add_argument("--config", type=Path, default=REPOSITORY / "configs" / "demo.yaml")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bridgeseg-unseen"), help="cache folder")
    parser.add_argument("--json", type=Path, help="results file (default: OUT/results.json)")
    parser.add_argument("--overlays", type=int, default=0, metavar="K",
                        help="also write OUT/overlays_<family>.png of K validation predictions")
    args = parser.parse_args()
    args.out = args.out.resolve()
    for variant in args.families:
        parse_variant(variant)
    rows = []
    for variant in args.families:
        rows.append(measure(variant, args))
        if args.overlays:
            sheet = overlay_sheet(rows[-1], args.overlays, args.out / f"overlays_{variant}.png")
            print(f"[{variant}] overlays: {sheet}")
    table = format_table(rows)
    budget = f"{args.minutes:g} minutes" if args.minutes else f"{args.steps} steps"
    print(f"\n{budget}, {args.train_images} training / {args.val_images} validation scenes"
          + (f", --set {' '.join(args.set)}" if args.set else "") + "; all in %\n" + table)
    path = args.json or args.out / "results.json"
    path.write_text(json.dumps({"steps": args.steps, "minutes": args.minutes, "set": args.set, "config": str(args.config),
                                "train_images": args.train_images, "val_images": args.val_images,
                                "rows": rows, "table": table}, indent=2) + "\n")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()

"""The ``bridgeseg`` command line: parses arguments, builds, calls. No logic of its own."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import ConfigError, load_config, resolve_config_path
from .data.registry import DATASETS
from .evaluation.instance_files import GT_FORMATS, SCORE_PROTOCOLS
from .files import OutputError, check_output_file, check_output_folder, write_text, writing
from .oracle import ORACLES
from .outputs import FORMATS

# the options that name an output folder / file, by argparse dest: checked before any command runs
OUTPUT_FOLDERS = ("out", "report")
OUTPUT_FILES = ("json", "onnx")
METRICS_KEPT = "the metrics are printed above"


def _load(args: argparse.Namespace):
    overrides = list(args.set or [])
    if getattr(args, "data_root", None):
        overrides.append(f"data.root={args.data_root}")
    if getattr(args, "scales", None):
        overrides.append(f"eval.scales=[{', '.join(str(scale) for scale in args.scales)}]")
    if getattr(args, "flip", False):
        overrides.append("eval.flip=true")
    if getattr(args, "tile_size", None) is not None:
        overrides.append(f"eval.tile_size={args.tile_size}")
    return load_config(resolve_config_path(args.config), overrides)


def _check_outputs(args: argparse.Namespace) -> None:
    """Raise ``OutputError`` before the work when an output location given on the command line
    cannot be written (a file where a folder should be, a read-only folder, ...)."""
    for dest, check in [(dest, check_output_folder) for dest in OUTPUT_FOLDERS] + \
                       [(dest, check_output_file) for dest in OUTPUT_FILES]:
        if getattr(args, dest, None):
            check(getattr(args, dest), f"--{dest}")


def _write_json(results: dict, path: str | None) -> None:
    """Write the metrics (already printed) to ``path``, atomically; a failure says they were printed."""
    if path:
        try:
            write_text(path, json.dumps(results, indent=2) + "\n")
        except OutputError as error:
            raise OutputError(f"{error}; {METRICS_KEPT}") from None
        print(f"wrote {path}")


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import cleanup, is_main_process
    from .engine.train import train
    from .report import metrics_table

    config = _load(args)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    main_process = is_main_process()
    if main_process:
        print(f"training {Path(args.config).name} into {out} (resolved config: {out / 'config.yaml'})")
    try:
        result = train(config, out, resume=not args.no_resume)
    finally:
        cleanup()
    if main_process:
        print(f"\nfinished {result.steps} steps in {result.seconds / 60:.1f} min; checkpoint {result.checkpoint}")
        print(metrics_table(result.metrics, result.class_names))
        for problem in result.unwritten:
            print(f"bridgeseg train: error: {problem}; {METRICS_KEPT}", file=sys.stderr)
    return 2 if result.unwritten else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .engine.evaluate import evaluate_config, write_reports
    from .html_report import Gallery
    from .report import metrics_table

    config = _load(args)
    gallery = Gallery(args.report) if args.report else None
    results, class_names = evaluate_config(config, args.checkpoint, oracle=args.oracle, device=args.device,
                                           gallery=gallery)
    print(metrics_table(results, class_names))
    _write_json(results, args.json)
    if args.report:
        with writing(f"the report in {args.report}", kept=METRICS_KEPT):
            path = write_reports(results, class_names, args.report, gallery.rows,
                                 f"Evaluation of {' + '.join(args.checkpoint or []) or 'oracle ' + args.oracle}",
                                 checkpoint=(args.checkpoint or [None])[0])
        print(f"wrote the report {path} (and report.md, metrics.json, class_scores.png)")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .engine.predict import predict_files
    from .predictor import Predictor

    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, scales=args.scales,
                                          flip=args.flip or None, tile_size=args.tile_size, overrides=args.set or ())
    views = len(predictor.views)
    print(f"predicting with {' + '.join(args.checkpoint)} on {predictor.device} ({views} view{'s' * (views > 1)}"
          + (f", {predictor.tile_size}-pixel tiles" if predictor.tile_size else "") + ")")
    summary = predict_files(predictor, args.inputs, args.out)
    print(summary.format())
    return 1 if summary.failed and not summary.images else 0


def cmd_predict_dataset(args: argparse.Namespace) -> int:
    from .engine.predict import predict_dataset

    config = _load(args)
    path = predict_dataset(config, args.checkpoint, args.out, args.format, split=args.split, device=args.device)
    print(f"wrote {args.format} predictions to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_onnx, export_onnx

    path = export_onnx(args.checkpoint, args.onnx, image_size=(args.height, args.width), opset=args.opset)
    print(f"wrote {path}")
    if not args.no_check:
        difference = check_onnx(args.checkpoint, path)
        print(f"onnxruntime vs PyTorch: largest absolute difference {difference:.2e}")
        if difference > args.tolerance:
            print(f"bridgeseg export: error: difference above --tolerance {args.tolerance}", file=sys.stderr)
            return 1
    return 0


def cmd_score_semantic(args: argparse.Namespace) -> int:
    from .evaluation.semantic import score_semantic_folders
    from .report import metrics_table

    results = {"semantic": score_semantic_folders(args.gt, args.pred, args.num_classes, args.ignore_index,
                                                  progress=True, split=args.split)}
    print(metrics_table(results))
    _write_json(results["semantic"], args.json)
    return 0


def cmd_score_instance(args: argparse.Namespace) -> int:
    from .evaluation.instance_files import score_instance_folders
    from .report import metrics_table

    results = score_instance_folders(args.gt, args.gt_format, args.pred, args.protocol, args.split, progress=True)
    print(metrics_table({"cityscapes" if args.protocol == "cityscapes" else "instance": results}))
    _write_json(results, args.json)
    return 0


def cmd_score_panoptic(args: argparse.Namespace) -> int:
    from .evaluation.panoptic import score_panoptic_files
    from .report import metrics_table

    results = score_panoptic_files(args.gt, args.pred, args.gt_folder, args.pred_folder, progress=True)
    print(metrics_table({"panoptic": results}))
    _write_json(results, args.json)
    return 0


def _or_default(value, default):
    """An option left unset (None) takes the library's default, so the two cannot drift apart."""
    return default if value is None else value


def cmd_demo(args: argparse.Namespace) -> int:
    from .data.synthetic import TRAIN_IMAGES, VAL_IMAGES
    from .demo import MINUTES, run_demo

    run_demo(Path(args.out), minutes=_or_default(args.minutes, MINUTES),
             num_train=_or_default(args.train_images, TRAIN_IMAGES), num_val=_or_default(args.val_images, VAL_IMAGES))
    return 0


def cmd_data_synthetic(args: argparse.Namespace) -> int:
    from .data.synthetic import TRAIN_IMAGES, VAL_IMAGES, SceneSpec, generate_dataset

    num_train, num_val = _or_default(args.train, TRAIN_IMAGES), _or_default(args.val, VAL_IMAGES)
    root = generate_dataset(args.out, num_train, num_val, seed=args.seed, spec=SceneSpec.for_size(args.size),
                            progress=True)
    print(f"wrote a synthetic VOC-layout dataset to {root} ({num_train} train / {num_val} val images)")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, format_report

    report = check_dataset(args.dataset, args.root, args.split, sbd_root=args.sbd_root, num_workers=args.workers)
    print(format_report(report, max_problems=args.max_problems))
    return 0 if report.ok else 1


def cmd_data_prepare_voc_aug(args: argparse.Namespace) -> int:
    from .data.sbd import prepare_voc_aug

    path = prepare_voc_aug(args.voc_root, args.sbd_root, progress=True)
    print(f"wrote the 10,582-image training labels to {Path(args.voc_root) / 'SegmentationClassAug'} and the list {path}")
    return 0


def cmd_data_prepare_sbd_splits(args: argparse.Namespace) -> int:
    from .data.sbd import sbd_voc2012_instance_ids

    for split in ("train", "val"):
        ids = sbd_voc2012_instance_ids(args.voc_root, args.sbd_root, split)
        path = Path(args.sbd_root) / f"voc2012_inst_{split}.txt"
        path.write_text("".join(f"{name}\n" for name in ids))
        print(f"wrote {path} ({len(ids)} images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridgeseg", description=(
        "Semantic and proposal-free instance segmentation (Wu, Shen, van den Hengel 2016)."))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("config", help="a YAML config (or the name of a shipped one, e.g. demo)")
        sub.add_argument("--data-root", help="dataset root in the config's layout (overrides data.root)")
        sub.add_argument("--set", nargs="+", metavar="KEY=VALUE", action="extend",
                         help="override config keys, e.g. --set train.lr=0.01 model.depth=50")

    sub = commands.add_parser("train", help="train a model from a config")
    config_arguments(sub)
    sub.add_argument("--out", help="run folder (default runs/<config name>); an existing run there is resumed")
    sub.add_argument("--no-resume", action="store_true", help="start from scratch even if OUT/last.pt exists")
    sub.set_defaults(handler=cmd_train)

    def view_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--scales", type=float, nargs="+", metavar="S",
                         help="multi-view testing: average over these image scales, e.g. 0.5 0.75 1 1.25 1.5")
        sub.add_argument("--flip", action="store_true", help="multi-view testing: add every view mirrored")
        sub.add_argument("--tile-size", type=int, metavar="PIXELS",
                         help="sliding window: predict in overlapping tiles of this size (0 = whole images)")
        sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")

    sub = commands.add_parser("evaluate", help="evaluate a checkpoint on the config's validation split")
    config_arguments(sub)
    sub.add_argument("--checkpoint", action="append", metavar="CKPT",
                     help="a training checkpoint (OUT/final.pt or OUT/last.pt); given twice, a semantic and a "
                          "localization checkpoint trained apart")
    sub.add_argument("--oracle", choices=ORACLES,
                     help="replace score maps / transform maps / both by ground truth")
    view_arguments(sub)
    sub.add_argument("--json", help="write the metrics to this JSON file")
    sub.add_argument("--report", help="write report.html (metrics, per-class table and chart, a gallery of every "
                                      "image) and report.md into this folder")
    sub.set_defaults(handler=cmd_evaluate)

    sub = commands.add_parser("predict", help="predict image files: class PNG, instance PNG, JSON, overlay per image")
    sub.add_argument("--checkpoint", required=True, action="append", metavar="CKPT",
                     help="a training checkpoint (joint, separate or semantic); given twice, a semantic and a "
                          "localization one trained apart")
    sub.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    sub.add_argument("--out", required=True, help="output folder")
    sub.add_argument("--set", nargs="+", metavar="KEY=VALUE", action="extend",
                     help="change the checkpoint's test-time settings (eval.* and instance.* keys), "
                          "e.g. --set instance.top_n=2 eval.scales=[0.75,1,1.25]")
    view_arguments(sub)
    sub.set_defaults(handler=cmd_predict)

    sub = commands.add_parser("predict-dataset", help="predict a dataset split into files other tools read")
    config_arguments(sub)
    sub.add_argument("--checkpoint", required=True, action="append", metavar="CKPT",
                     help="a training checkpoint; given twice, a semantic and a localization one trained apart")
    sub.add_argument("--out", required=True, help="output folder")
    sub.add_argument("--format", required=True, choices=FORMATS,
                     help="voc: class PNGs + instance .txt; cityscapes: labelIds PNGs + instance .txt; "
                          "coco: results.json; cityscapes-panoptic / coco-panoptic: panoptic PNGs + JSON")
    sub.add_argument("--split", help="split to predict (default: eval.split, else the validation split)")
    view_arguments(sub)
    sub.set_defaults(handler=cmd_predict_dataset)

    sub = commands.add_parser("export", help="export the network to ONNX and check it with onnxruntime")
    sub.add_argument("--checkpoint", required=True, help="a training checkpoint")
    sub.add_argument("--onnx", required=True, help="the .onnx file to write")
    sub.add_argument("--height", type=int, default=512, help="example input height (axes stay dynamic)")
    sub.add_argument("--width", type=int, default=512, help="example input width (axes stay dynamic)")
    sub.add_argument("--opset", type=int, default=17)
    sub.add_argument("--no-check", action="store_true", help="skip the onnxruntime vs PyTorch comparison")
    sub.add_argument("--tolerance", type=float, default=1e-3,
                     help="largest allowed |onnx - torch| (default 1e-3; exit status 1 above it)")
    sub.set_defaults(handler=cmd_export)

    score = commands.add_parser("score", help="score prediction files against ground truth")
    kinds = score.add_subparsers(dest="kind", required=True, metavar="KIND")
    sub = kinds.add_parser("semantic", help="label PNGs vs label PNGs, matched by file stem")
    sub.add_argument("--gt", required=True, help="folder of ground-truth label PNGs")
    sub.add_argument("--pred", required=True, help="folder of predicted label PNGs")
    sub.add_argument("--num-classes", type=int, help="default: from classes.txt next to --gt, else 21 (VOC)")
    sub.add_argument("--ignore-index", type=int, default=255)
    sub.add_argument("--split", help="a list of image ids to score, e.g. ImageSets/Segmentation/val.txt "
                                     "(default: every ground-truth PNG)")
    sub.add_argument("--json", help="write the metrics to this JSON file")
    sub.set_defaults(handler=cmd_score_semantic)

    sub = kinds.add_parser("instance", help="instance prediction .txt files vs a dataset's instances (mAP^r)")
    sub.add_argument("--gt", required=True, help="dataset root (voc, sbd) or a folder of Cityscapes instanceIds PNGs")
    sub.add_argument("--gt-format", required=True, choices=GT_FORMATS)
    sub.add_argument("--pred", required=True, help="folder of <image stem>.txt files (mask path, class id, score)")
    sub.add_argument("--protocol", default="sds", choices=SCORE_PROTOCOLS,
                     help="sds: mAP^r of Hariharan et al. (default); mnc: the MNC/FCIS evaluation code's variant; "
                          "cityscapes: the official Cityscapes AP and AP50 (with --gt-format cityscapes)")
    sub.add_argument("--split", help="a list of image ids to score (default: every ground-truth image)")
    sub.add_argument("--json", help="write the metrics to this JSON file")
    sub.set_defaults(handler=cmd_score_instance)

    sub = kinds.add_parser("panoptic", help="panoptic PNG + JSON files vs ground truth in the same format (PQ)")
    sub.add_argument("--gt", required=True, help="ground-truth panoptic JSON, e.g. gtFine/cityscapes_panoptic_val.json")
    sub.add_argument("--pred", required=True, help="predicted panoptic JSON (predict-dataset --format "
                                                   "cityscapes-panoptic or coco-panoptic)")
    sub.add_argument("--gt-folder", help="folder of the ground-truth PNGs (default: the JSON's path without .json)")
    sub.add_argument("--pred-folder", help="folder of the predicted PNGs (default: the JSON's path without .json)")
    sub.add_argument("--json", help="write the metrics to this JSON file")
    sub.set_defaults(handler=cmd_score_panoptic)

    sub = commands.add_parser("demo", help="generate the synthetic dataset, train, evaluate, draw overlays")
    sub.add_argument("--out", default="demo-output", help="output folder (default demo-output)")
    sub.add_argument("--minutes", type=float, help="training time budget in minutes (default 8)")
    sub.add_argument("--train-images", type=int, help=argparse.SUPPRESS)
    sub.add_argument("--val-images", type=int, help=argparse.SUPPRESS)
    sub.set_defaults(handler=cmd_demo)

    data = commands.add_parser("data", help="dataset tools")
    tools = data.add_subparsers(dest="tool", required=True, metavar="TOOL")
    sub = tools.add_parser("synthetic", help="write the synthetic shapes dataset in the VOC layout")
    sub.add_argument("--out", required=True, help="dataset root to write")
    sub.add_argument("--train", type=int, help="training images (default 3000, as the demo)")
    sub.add_argument("--val", type=int, help="validation images (default 300, as the demo)")
    sub.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    sub.add_argument("--seed", type=int, default=0)
    sub.set_defaults(handler=cmd_data_synthetic)

    sub = tools.add_parser("check", help="check a dataset root before a long run (exit status 1 on problems)")
    sub.add_argument("--dataset", required=True, choices=list(DATASETS))
    sub.add_argument("--root", required=True, help="the dataset root (as data.root)")
    sub.add_argument("--split", action="append", help="split(s) to check (default: train and val)")
    sub.add_argument("--sbd-root", help="SBD root, for --dataset voc_aug without prepared labels")
    sub.add_argument("--workers", type=int, default=0, help="processes reading files in parallel")
    sub.add_argument("--max-problems", type=int, default=20, help="problems listed in full (all are counted)")
    sub.set_defaults(handler=cmd_data_check)

    sub = tools.add_parser("prepare-voc-aug", help="write VOC 2012 + SBD training labels as PNGs once, for speed")
    sub.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012")
    sub.add_argument("--sbd-root", required=True, help="benchmark_RELEASE/dataset (with cls/, inst/, train.txt, val.txt)")
    sub.set_defaults(handler=cmd_data_prepare_voc_aug)

    sub = tools.add_parser("prepare-sbd-splits",
                           help="write SBD's instance splits of the paper (VOC 2012 train 5,623 / val 5,732)")
    sub.add_argument("--voc-root", required=True, help="VOCdevkit/VOC2012 (for ImageSets/Main/{train,val}.txt)")
    sub.add_argument("--sbd-root", required=True, help="benchmark_RELEASE/dataset; the lists are written there")
    sub.set_defaults(handler=cmd_data_prepare_sbd_splits)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _check_outputs(args)
        return args.handler(args)
    except (ConfigError, OSError, ValueError, FloatingPointError, ImportError) as error:
        print(f"bridgeseg {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; a training run resumes from its last checkpoint when started again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

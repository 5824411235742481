"""The paper's grouping against connected components of the class map, on crowded scenes where
objects of one class touch: mAP^r@0.5 / @0.7 of each, from the same class maps.

    python benchmarks/instances_vs_connected_components.py --data DIR [--checkpoint CKPT] [--family rings]

``--data`` is a VOC-layout dataset with ``SegmentationObject`` PNGs; it is written first when it does
not exist (``benchmarks/scenes.py``, the family's crowded variant: almost every object touches one
of its own class, so connected components of even the ground-truth class map merge instances).
Rows, all through ``bridgeseg evaluate``'s code path (``instance.method`` and ``--oracle``):

* ground truth: the grouping on ground-truth maps (``--oracle both``: what perfect networks give)
  and connected components of the ground-truth class map (``--oracle semantic`` with
  ``instance.method=connected_components``: the best that baseline can do);
* with ``--checkpoint`` (a joint or separate checkpoint trained on that kind of scene): the
  network's own instances (``instance.method=grouping``) and connected components of its own
  predicted class map (``instance.method=connected_components``), same views, same class maps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scenes import GENERATORS, write_dataset

from bridgeseg.config import load_config, resolve_config_path
from bridgeseg.engine.evaluate import evaluate_config


def _row(config, checkpoint, oracle: str | None, method: str) -> tuple[float, float]:
    results, _ = evaluate_config(config.replace(**{"instance.method": method}), checkpoint, oracle=oracle,
                                 device="cpu", progress=False)
    return results["instance"]["mAP_r@0.5"], results["instance"]["mAP_r@0.7"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="VOC-layout root (written if missing)")
    parser.add_argument("--family", default="rings", choices=list(GENERATORS),
                        help="scene family of benchmarks/scenes.py used when --data does not exist")
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--checkpoint", action="append", help="a checkpoint trained on such scenes (twice: two "
                                                                "networks trained apart)")
    parser.add_argument("--config", default="demo", help="config for the test views and grouping settings")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    if not (args.data / "ImageSets").is_dir():
        write_dataset(args.family, args.data, num_train=0, num_val=args.val_images, crowded=True)
    config = load_config(resolve_config_path(args.config), [f"data.root={args.data}", "data.workers=0", *args.set])
    rows = [("grouping, ground-truth maps (--oracle both)", None, "both", "grouping"),
            ("connected components of the ground-truth class map", None, "both", "connected_components")]
    if args.checkpoint:
        rows += [("grouping, the network's maps", args.checkpoint, None, "grouping"),
                 ("connected components of its predicted class map", args.checkpoint, None, "connected_components")]
    print(f"{args.data}: {config.evaluation_split} split, views {list(config.eval.scales)} flip {config.eval.flip}")
    print(f"  {'instances from':<54}{'mAP^r@0.5':>10}{'mAP^r@0.7':>10}")
    found = {}
    for name, checkpoint, oracle, method in rows:
        found[name] = _row(config, checkpoint, oracle, method)
        print(f"  {name:<54}{100 * found[name][0]:>10.1f}{100 * found[name][1]:>10.1f}", flush=True)
    if args.checkpoint:
        ours, theirs = found[rows[2][0]], found[rows[3][0]]
        print(f"  grouping - connected components: {100 * (ours[0] - theirs[0]):+.1f} @0.5, "
              f"{100 * (ours[1] - theirs[1]):+.1f} @0.7 points")


if __name__ == "__main__":
    main()

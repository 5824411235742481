"""What output stride costs before any learning: ground-truth class scores and box transforms,
sampled on the network's grid, put through our upsampling and grouping.

    .venv/bin/python benchmarks/output_stride_ceiling.py [--sizes 64 128] [--strides 1 4 8] [--images 60]

For each scene size (synthetic scenes with objects in proportion) and stride, the mean IoU and
mAP^r@0.5 / @0.7 that perfect score and transform maps reach: the ceiling of any network at that
stride. It is why the demo uses 128-pixel scenes, and heads on maps at stride 4.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from bridgeseg.data.instances import instances_from_maps
from bridgeseg.data.synthetic import CLASS_NAMES, SceneSpec, render_scene
from bridgeseg.oracle import oracle_probabilities, oracle_transforms
from bridgeseg.evaluation.instance import InstanceEvaluator
from bridgeseg.evaluation.semantic import SemanticEvaluator
from bridgeseg.grouping import InstanceConfig, group_instances
from bridgeseg.geometry import resize_to_input


def ceiling(size: int, stride: int, images: int, seed: int) -> tuple[float, float, float]:
    """(mean IoU, mAP^r@0.5, mAP^r@0.7) of ground-truth maps sampled every ``stride`` pixels."""
    num_classes = len(CLASS_NAMES)
    spec, params = SceneSpec.for_size(size), InstanceConfig()
    semantic_evaluator, instance_evaluator = SemanticEvaluator(num_classes), InstanceEvaluator(list(CLASS_NAMES))
    for index in range(images):
        _, semantic, instance = render_scene(np.random.default_rng([seed, index]), spec)
        semantic, instance = torch.from_numpy(semantic.astype(np.int64)), torch.from_numpy(instance.astype(np.int64))
        probs = oracle_probabilities(semantic, num_classes, stride)
        semantic_evaluator.process(resize_to_input(probs[None], tuple(semantic.shape), stride).argmax(1)[0], semantic)
        found = group_instances(probs, oracle_transforms(instance, semantic, num_classes, stride), stride,
                                tuple(semantic.shape), params)
        instance_evaluator.process(found.masks, found.labels, found.scores,
                                   *instances_from_maps(instance, semantic, num_classes))
    instances = instance_evaluator.evaluate()
    return semantic_evaluator.evaluate()["mean_iou"], instances["mAP_r@0.5"], instances["mAP_r@0.7"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.images} synthetic scenes per size; ground-truth maps sampled every `stride` pixels (all in %)")
    print(f"  {'scene':>7} {'stride':>7} {'mean IoU':>9} {'mAP^r@0.5':>10} {'mAP^r@0.7':>10}")
    for size in args.sizes:
        for stride in args.strides:
            miou, ap50, ap70 = ceiling(size, stride, args.images, args.seed)
            print(f"  {size:>5}px {stride:>7} {100 * miou:9.1f} {100 * ap50:10.1f} {100 * ap70:10.1f}")


if __name__ == "__main__":
    main()

"""Semantic score maps + transform maps of one image -> instances (paper section 2.1).

The paper's test-time pipeline, steps 3-6 (steps 1-2 are the two networks):

1. **Inputs.** ``probs`` (C, h, w) softmax probabilities (class 0 = background) and
   ``transforms`` (4 * (C - 1), h, w) in the ``bridgeseg.targets`` encoding, both on the output
   grid: position (i, j) is input pixel (i * stride, j * stride).
2. **Candidates.** Foreground class c keeps the pixels where c is among the pixel's ``top_n``
   highest scores over all C classes (``candidate_masks``; ``top_n = 1`` is ``argmax == c``),
   optionally only those with ``probs[c] >= min_score``.
3. **Votes.** Every candidate votes for the box that its class's 4 transform channels decode to
   (``vote_boxes``), scored by its class probability: the "transformed score map".
4. **Hypotheses.** Greedy NMS over the votes of a class keeps the local maxima as instance
   hypotheses (``cluster_votes``).
5. **Trace-back.** Every candidate joins the kept box that suppressed it: the first kept box, in
   descending score order, whose IoU with its vote exceeds the NMS threshold. The cluster is the
   instance on the grid; its confidence is the mean class probability of its candidates.
6. **Clean-up.** Clusters smaller than ``min_cluster_size`` grid pixels are dropped, region NMS
   (mask IoU on the grid, per class, greedy by score; ``region_nms``) removes duplicate
   hypotheses, and the ``max_instances`` best are kept. The clusters of one class are disjoint,
   so region NMS matters when several candidate masks per class are grouped
   (``InstanceConfig.per_rank_masks``) or when hypotheses of several runs are merged.
7. **Masks.** ``masks: class_map`` (default): the image pixels of the cluster's class that its grid
   neighbourhood claims (``bridgeseg.refine``); ``grid``: the grid cluster upsampled like
   ``bridgeseg.geometry.resize_to_input`` (bilinear, ``align_corners=True`` onto the
   (h - 1) * stride + 1 grid, edge replicate) and thresholded at ``mask_threshold``. Then
   fragments of one object are joined (``merge_fragments``; with ``merge_across_classes`` also
   pieces that an unsure class map gives different classes) and empty masks dropped.

The NMS steps (and their scalability: merged identical votes, chunked rounds) are in
``bridgeseg.nms``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .geometry import resize_to_input
from .nms import cluster_votes, greedy_keep
from .refine import ImageCandidates, assign_pixels, fill_gaps, merge_fragments, pixel_extents
from .settings import check_section, setting
from .targets import decode_boxes

_UPSAMPLE_CHUNK = 16  # masks upsampled together (float (chunk, H, W) intermediate)
MASK_SOURCES = ("class_map", "grid")
METHODS = ("grouping", "connected_components")


@dataclass
class Instances:
    """Instances of one image.

    Attributes:
        masks: (K, H, W) bool.
        labels: (K,) long, the class 1..C-1.
        scores: (K,) float confidence (mean class probability of the cluster), descending.
        boxes: (K, 4) float xyxy, the kept vote box in image pixels (not clipped to the image).
    """

    masks: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device) -> "Instances":
        return Instances(self.masks.to(device), self.labels.to(device), self.scores.to(device),
                         self.boxes.to(device))

    @staticmethod
    def empty(image_size, device=None) -> "Instances":
        height, width = image_size
        return Instances(masks=torch.zeros(0, height, width, dtype=torch.bool, device=device),
                         labels=torch.zeros(0, dtype=torch.long, device=device),
                         scores=torch.zeros(0, device=device),
                         boxes=torch.zeros(0, 4, device=device))


@dataclass(frozen=True)
class InstanceConfig:
    """The ``instance:`` config section: every setting of ``group_instances``, checked when built.

    The paper gives none of these numbers except top-n. One type serves the YAML config, ``--set``
    overrides and Python callers (``InstanceConfig(top_n=2)``); a value out of range is a
    ``ConfigError`` naming ``instance.<key>`` and its range.

    Attributes:
        top_n: a pixel is a candidate of every class among its ``top_n`` highest scores (paper's
            top-n masks; 1 = argmax). Ties rank the lower class index first.
        nms_threshold: box IoU above which a vote is suppressed by / traced back to a kept box.
        region_nms_threshold: mask IoU above which a lower-scoring hypothesis of the same class is
            removed. 0.5: a duplicate covers most of its twin; two genuinely different objects
            of one class rarely share half of their union. Within one grouping pass the clusters
            of a class are disjoint, so region NMS only acts on ``per_rank_masks`` hypotheses.
        min_cluster_size: clusters with fewer candidate grid pixels are dropped. Default 1 (keep
            all): at the usual output stride 8 one grid pixel already stands for 8 x 8 image
            pixels, the size of a small object; at stride 1 with network outputs, a value of
            about 64 (the area of one stride-8 cell) removes noise clusters.
        min_score: candidates also need ``probs[c] >= min_score``. Default 0.0: the ranking
            decides, as in the paper. With ``top_n > 1`` a small value (e.g. 0.05) stops
            near-zero runner-up classes from voting.
        max_instances: at most this many instances, by score, are returned.
        per_rank_masks: False (default): one pass over the top-``top_n`` candidate set. True:
            the other reading of the paper's "we generate n masks per category": group the
            nested top-1, top-2, ..., top-``top_n`` masks separately, then region NMS merges the
            duplicate hypotheses of different passes.
        pre_nms_top_k: None (default): exact greedy NMS over all votes. k: only the k
            highest-scoring distinct votes of a class (per pass) can become hypotheses; votes
            no kept box covers are dropped. Bounds the work on very noisy, large maps.
        nms_chunk_size: most distinct votes handed to one NMS call; the clustering is exact for
            any value (it proceeds in rounds). Bounds torchvision's O(n^2) CUDA NMS memory.
        vote_quantum: votes whose box coordinates round to the same multiple of this (pixels)
            are merged into one NMS entry scored by its best vote. 0 merges exact duplicates only.
        mask_threshold: with ``masks: grid``, an upsampled cluster indicator at or above this is
            inside the mask.
        masks: ``class_map`` (default): each instance's mask is the image pixels of its class
            (top-n candidates at image resolution) that its grid cluster's neighbourhood claims
            (``bridgeseg.refine``), so it follows the class map; ``grid``: the cluster's grid
            indicator upsampled and thresholded (stride-sized octagons).
        merge_fragments: t > 0: two clusters of one class that each have at least a fraction t
            of their pixels inside the other's box are pieces of one object, and the lower-scoring
            joins the higher (``refine.merge_fragments``; an object split by a noisy localization
            map comes back whole). Default 0.5: on networks trained on three generators of
            ``benchmarks/scenes.py``, crowded ones too, it gave the highest mAP^r of 0 / 0.4 /
            0.5 / 0.6 / 0.8 / 0.9 or was within 0.5 points of it. 0: clusters stay apart, as in
            the paper. Instances whose mask is empty are dropped either way.
        merge_across_classes: pieces of one object that the class map gives different classes
            join too (the same box rule, and the joining piece's pixels give the other's class
            at least half the probability of their own; pieces, not the overlapping runner-up
            hypotheses of ``top_n > 1``), and the whole takes the best-scoring piece's class.
            Default True: on networks trained for 2,600 steps on the demo's scenes and four
            generators of ``benchmarks/scenes.py`` it added 0 to 5.1 points of mAP^r@0.5 and 0
            to 5.1 of @0.7 and lost nowhere (docs/recipe-history.md, "Release 6: pieces of two classes join").
            False: as the paper, an object that the class map splits between classes stays in
            pieces, one per class.
        method: ``grouping`` (default, the paper's) or ``connected_components`` (the baseline: each
            8-connected region of a class in the class map is one instance, scored by its mean
            class probability; ``bridgeseg.components``).
    """

    top_n: int = setting(1, minimum=1)
    nms_threshold: float = setting(0.5, minimum=0.0, below=1.0)
    region_nms_threshold: float = setting(0.5, minimum=0.0, below=1.0)
    min_cluster_size: int = setting(1, minimum=1)
    min_score: float = setting(0.0, minimum=0.0, maximum=1.0)
    max_instances: int = setting(100, minimum=1)
    per_rank_masks: bool = setting(False)
    pre_nms_top_k: int | None = setting(None, minimum=1)
    nms_chunk_size: int = setting(8192, minimum=1)
    vote_quantum: float = setting(1.0 / 16, minimum=0.0)
    mask_threshold: float = setting(0.5, above=0.0, maximum=1.0)
    masks: str = setting("class_map", choices=MASK_SOURCES)
    merge_fragments: float = setting(0.5, minimum=0.0, maximum=1.0)
    merge_across_classes: bool = setting(True)
    method: str = setting("grouping", choices=METHODS)

    def __post_init__(self) -> None:
        check_section(self, "instance")


# ----------------------------------------------------------------------------------------------
# Steps 2-3: candidates and votes
# ----------------------------------------------------------------------------------------------

def candidate_masks(probs: torch.Tensor, top_n: int) -> torch.Tensor:
    """Pixels where each foreground class is among the ``top_n`` highest scores.

    Args:
        probs: (C, h, w) class scores, class 0 = background.
        top_n: how many top-ranked classes each pixel has (>= 1). Equal scores rank the lower
            class index first, so ``top_n = 1`` is exactly ``probs.argmax(0) == c``.

    Returns:
        (C - 1, h, w) bool; row k is class k + 1.
    """
    if top_n < 1:
        raise ValueError(f"top_n must be >= 1, got {top_n}")
    ranked = probs.argsort(dim=0, descending=True, stable=True)[:top_n]
    in_top = torch.zeros(probs.shape, dtype=torch.bool, device=probs.device)
    in_top.scatter_(0, ranked, True)
    return in_top[1:]


def vote_boxes(transforms: torch.Tensor, stride: int) -> torch.Tensor:
    """The box every grid position votes for, for every foreground class.

    Args:
        transforms: (4 * (C - 1), h, w) transform map (``bridgeseg.targets`` encoding).
        stride: the map's stride in input pixels.

    Returns:
        (C - 1, 4, h, w) boxes xyxy in input pixels; row k is class k + 1.
    """
    channels, height, width = transforms.shape
    if channels % 4:
        raise ValueError(f"a transform map needs 4 channels per class, got {channels}")
    return decode_boxes(transforms.reshape(channels // 4, 4, height, width), stride)


# ----------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------

@dataclass
class _ClassHypotheses:
    """Hypotheses of one class. ``cluster_maps`` (R, h * w) long: the hypothesis each grid pixel
    belongs to in each of the R passes (-1: none); ``scores`` (K,), ``boxes`` (K, 4)."""

    cluster_maps: torch.Tensor
    scores: torch.Tensor
    boxes: torch.Tensor

    def select(self, keep: torch.Tensor) -> "_ClassHypotheses":
        """Keep the hypotheses where ``keep`` (K,) bool is true, renumbering the maps."""
        new_id = keep.long().cumsum(0) - 1
        old = self.cluster_maps.clamp(min=0)
        stays = (self.cluster_maps >= 0) & keep[old]
        return _ClassHypotheses(torch.where(stays, new_id[old], -1), self.scores[keep], self.boxes[keep])

    def sizes(self) -> torch.Tensor:
        """(K,) candidate pixels per hypothesis."""
        ids = self.cluster_maps[self.cluster_maps >= 0]
        return torch.bincount(ids, minlength=len(self.scores))

    def overlaps(self) -> torch.Tensor:
        """(K, K) grid mask IoU. Clusters of one pass are disjoint; passes are compared pairwise."""
        count = len(self.scores)
        inter = torch.zeros(count * count, device=self.scores.device)
        passes = len(self.cluster_maps)
        for a in range(passes):
            for b in range(a + 1, passes):
                ids_a, ids_b = self.cluster_maps[a], self.cluster_maps[b]
                both = (ids_a >= 0) & (ids_b >= 0)
                pairs = ids_a[both] * count + ids_b[both]
                inter.index_add_(0, pairs, torch.ones_like(pairs, dtype=inter.dtype))
        inter = inter.view(count, count)
        inter = inter + inter.T
        size = self.sizes().to(inter.dtype)
        return inter / (size.unsqueeze(1) + size.unsqueeze(0) - inter).clamp(min=1)


def _cluster_pass(votes: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor, first_id: int,
                  settings: InstanceConfig):
    """Cluster one candidate mask of one class.

    Args:
        votes: (4, h * w) the class's vote boxes; scores: (h * w,) its probabilities;
        candidates: (h * w,) bool; first_id: the id given to this pass's first hypothesis.

    Returns:
        ``(cluster_map, scores, boxes)``: (h * w,) long hypothesis ids (-1: none), (K,), (K, 4).
    """
    pixels = candidates.nonzero().squeeze(1)
    pixel_scores = scores[pixels]
    kept, assignment = cluster_votes(votes[:, pixels].T, pixel_scores, settings.nms_threshold,
                                     settings.nms_chunk_size, settings.pre_nms_top_k, settings.vote_quantum)
    boxes = votes[:, pixels[kept]].T
    member = assignment >= 0
    pixels, assignment, pixel_scores = pixels[member], assignment[member], pixel_scores[member]
    size = torch.bincount(assignment, minlength=len(kept)).to(scores.dtype)
    total = scores.new_zeros(len(kept)).index_add_(0, assignment, pixel_scores)
    cluster_map = torch.full_like(candidates, -1, dtype=torch.long)
    cluster_map[pixels] = assignment + first_id
    return cluster_map, total / size.clamp(min=1), boxes


def _class_hypotheses(votes: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor,
                      settings: InstanceConfig) -> _ClassHypotheses:
    """Steps 4-6 for one class: clusters of every pass, size filter, region NMS.

    Args:
        votes: (4, h * w); scores: (h * w,); candidates: (R, h * w) bool, one row per pass.
    """
    maps, all_scores, all_boxes, next_id = [], [], [], 0
    for pass_candidates in candidates:
        cluster_map, pass_scores, pass_boxes = _cluster_pass(votes, scores, pass_candidates, next_id, settings)
        maps.append(cluster_map)
        all_scores.append(pass_scores)
        all_boxes.append(pass_boxes)
        next_id += len(pass_scores)
    hypotheses = _ClassHypotheses(torch.stack(maps), torch.cat(all_scores), torch.cat(all_boxes))
    hypotheses = hypotheses.select(hypotheses.sizes() >= settings.min_cluster_size)
    if len(candidates) > 1 and len(hypotheses.scores) > 1:
        hypotheses = hypotheses.select(greedy_keep(hypotheses.overlaps(), hypotheses.scores,
                                                    settings.region_nms_threshold))
    return hypotheses


def upsample_masks(masks: torch.Tensor, stride: int, image_size: tuple[int, int],
                   threshold: float = 0.5) -> torch.Tensor:
    """Grid masks -> image masks with the geometry of ``bridgeseg.geometry.resize_to_input``.

    The indicator is resampled bilinearly with ``align_corners=True`` onto the
    (h - 1) * stride + 1 grid (position i on input pixel i * stride), rows and columns past the
    last centre repeat the edge, and the result is thresholded at ``threshold`` (>=).

    Args:
        masks: (K, h, w) bool.
        stride: the grid's stride; image_size: (H, W).

    Returns:
        (K, H, W) bool (``masks`` itself when the grid already has the image's size).
    """
    if tuple(masks.shape[-2:]) == tuple(image_size):
        return masks
    out = torch.zeros(masks.shape[0], *image_size, dtype=torch.bool, device=masks.device)
    for start in range(0, masks.shape[0], _UPSAMPLE_CHUNK):
        chunk = masks[start:start + _UPSAMPLE_CHUNK].unsqueeze(0).float()
        out[start:start + _UPSAMPLE_CHUNK] = resize_to_input(chunk, image_size, stride)[0] >= threshold
    return out


def _pass_candidates(probs: torch.Tensor, settings: InstanceConfig) -> torch.Tensor:
    """(R, C - 1, h, w) bool candidate masks, one per pass (R = top_n with per_rank_masks, else 1)."""
    confident = (probs[1:] >= settings.min_score) & (probs[1:] > 0)  # a class of probability 0 is never a candidate
    return torch.stack([candidate_masks(probs, rank) & confident for rank in _pass_ranks(settings)])


def _pass_ranks(settings: InstanceConfig) -> tuple[int, ...]:
    """The top-n rank of each grouping pass: 1..n nested (``per_rank_masks``), else just n."""
    return tuple(range(1, settings.top_n + 1)) if settings.per_rank_masks else (settings.top_n,)


def _check_inputs(probs: torch.Tensor, transforms: torch.Tensor) -> None:
    if probs.dim() != 3 or transforms.dim() != 3:
        raise ValueError(f"expected probs (C, h, w) and transforms (4(C-1), h, w), got "
                         f"{tuple(probs.shape)} and {tuple(transforms.shape)}")
    if transforms.shape != (4 * (probs.shape[0] - 1), *probs.shape[1:]):
        raise ValueError(f"transforms {tuple(transforms.shape)} do not match probs {tuple(probs.shape)}")


def _paint_clusters(grid_masks: torch.Tensor, hypotheses: _ClassHypotheses, rows: torch.Tensor,
                    ids: torch.Tensor) -> None:
    """Set ``grid_masks[r]`` (n, h * w) to the pixels of hypothesis ``ids[r]`` for every r in ``rows``."""
    for cluster_map in _rows_of_clusters(hypotheses, rows, ids):
        pixels = (cluster_map >= 0).nonzero().squeeze(1)
        grid_masks[cluster_map[pixels], pixels] = True


def _rows_of_clusters(hypotheses: _ClassHypotheses, rows: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
    """Each pass's cluster map (h * w,) with hypothesis ``ids[r]`` renamed to output row ``r`` for
    every r in ``rows``, and every other hypothesis removed (-1)."""
    row_of = torch.full((len(hypotheses.scores) + 1,), -1, dtype=torch.long, device=rows.device)
    row_of[ids[rows]] = rows
    return [row_of[cluster_map] for cluster_map in hypotheses.cluster_maps]  # -1 indexes the last entry: -1


def _class_map_masks(per_class: dict, labels: torch.Tensor, ids: torch.Tensor, grid_size: tuple[int, int],
                     candidates: ImageCandidates, settings: InstanceConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, H, W) masks of the chosen hypotheses at image resolution (see ``bridgeseg.refine``), and
    their (K, 4) ``refine.mask_extents``.

    One pass over the image per rank of candidates, for all classes together: each candidate
    pixel reads the grown cluster map of its own class."""
    masks = torch.zeros(len(labels), *candidates.image_size, dtype=torch.bool, device=labels.device)
    pixels = []  # (owner, ys, xs) of every pass
    num_classes = candidates.probs.shape[0]
    for index, rank in enumerate(_pass_ranks(settings)):
        layer_of = torch.full((num_classes,), -1, dtype=torch.long, device=labels.device)  # class -> layer
        layers = []
        for k, hyp in per_class.items():
            rows = (labels == k + 1).nonzero().squeeze(1)
            cluster_rows = _rows_of_clusters(hyp, rows, ids)[index] if len(rows) else None
            if cluster_rows is not None and bool((cluster_rows >= 0).any()):
                layer_of[k + 1] = len(layers)
                layers.append(fill_gaps(cluster_rows.view(grid_size)))
        if not layers:
            continue
        stack = torch.stack(layers)  # (L, h, w)
        for classes in candidates(rank):  # (H, W) each pixel's j-th candidate class, 0 = none
            owner = assign_pixels(stack, candidates.stride, candidates.image_size, layers=layer_of[classes])
            ys, xs = (owner >= 0).nonzero(as_tuple=True)
            masks[owner[ys, xs], ys, xs] = True
            pixels.append((owner[ys, xs], ys, xs))
    if not pixels:
        return masks, torch.zeros(len(labels), 4, dtype=torch.long, device=labels.device)
    owners, ys, xs = (torch.cat(parts) for parts in zip(*pixels))
    return masks, pixel_extents(owners, ys, xs, len(labels))


def group_instances(probs: torch.Tensor, transforms: torch.Tensor, stride: int, image_size: tuple[int, int],
                    settings: InstanceConfig = InstanceConfig(), class_map: torch.Tensor | None = None,
                    confidences: torch.Tensor | None = None, classes: Sequence[int] | None = None) -> Instances:
    """Instances of one image from its semantic and localization outputs (paper section 2.1).

    Args:
        probs: (C, h, w) softmax probabilities, class 0 = background; position (i, j) is input
            pixel (i * stride, j * stride).
        transforms: (4 * (C - 1), h, w) on the same grid (``bridgeseg.targets`` encoding).
        stride: the grid's stride in input pixels.
        image_size: (H, W) of the input image.
        settings: see ``InstanceConfig``.
        class_map: (H, W) the image's class map (the argmax of the upsampled probabilities, or a
            ground-truth map), used as the top-1 candidates of ``masks: class_map``; None: computed
            from ``probs``.
        confidences: (C, h, w) probabilities whose cluster means are the instances' scores; None:
            ``probs`` (the paper's). Candidates always come from ``probs``.
        classes: the classes that have instances ("things", e.g. Cityscapes' 8); None: every
            foreground class. Others ("stuff": road, sky) are never grouped.

    Returns:
        ``Instances`` on the inputs' device, by descending score: masks (K, H, W).
    """
    _check_inputs(probs, transforms)
    height, width = probs.shape[-2:]
    probs = probs.float()
    candidates = _pass_candidates(probs, settings).flatten(2)  # (R, C - 1, h * w)
    votes = vote_boxes(transforms.float(), stride).flatten(2)  # (C - 1, 4, h * w)
    flat_probs = (probs if confidences is None else confidences.float()).flatten(1)
    present = candidates.any(dim=2).any(dim=0).nonzero().squeeze(1).tolist()
    if classes is not None:
        present = [k for k in present if k + 1 in set(classes)]
    per_class = {k: _class_hypotheses(votes[k], flat_probs[k + 1], candidates[:, k], settings) for k in present}
    per_class = {k: hyp for k, hyp in per_class.items() if len(hyp.scores)}
    if not per_class:
        return Instances.empty(image_size, probs.device)
    scores = torch.cat([hyp.scores for hyp in per_class.values()])
    labels = torch.cat([torch.full_like(hyp.scores, k + 1, dtype=torch.long) for k, hyp in per_class.items()])
    boxes = torch.cat([hyp.boxes for hyp in per_class.values()])
    local_ids = torch.cat([torch.arange(len(hyp.scores), device=probs.device) for hyp in per_class.values()])
    best = scores.argsort(descending=True, stable=True)[:settings.max_instances]
    grid_masks = torch.zeros(len(best), height * width, dtype=torch.bool, device=probs.device)
    for k, hyp in per_class.items():
        _paint_clusters(grid_masks, hyp, (labels[best] == k + 1).nonzero().squeeze(1), local_ids[best])
    if settings.masks == "class_map" and (height, width) != tuple(image_size):
        candidates = ImageCandidates(probs, stride, tuple(image_size), settings.min_score, class_map)
        masks, extents = _class_map_masks(per_class, labels[best], local_ids[best], (height, width), candidates,
                                          settings)
    else:
        masks = upsample_masks(grid_masks.view(-1, height, width), stride, image_size, settings.mask_threshold)
        extents = None
    profiles = None
    if settings.merge_across_classes and settings.merge_fragments > 0 and len(best) > 1:
        # (K, C) each cluster's mean class probabilities on the grid: only the joining reads them
        members = grid_masks.float()
        profiles = members @ probs.flatten(1).T / members.sum(1, keepdim=True).clamp(min=1)
    masks, keep = merge_fragments(masks, labels[best], boxes[best], settings.merge_fragments, profiles, extents)
    best = best[keep]
    return Instances(masks=masks[keep], labels=labels[best], scores=scores[best], boxes=boxes[best])

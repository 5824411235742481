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
   instance mask on the grid, upsampled to the image like ``bridgeseg.models.fcrn.resize_to_input``
   (bilinear, ``align_corners=True`` onto the (h - 1) * stride + 1 grid, edge replicate) and
   thresholded at 0.5; its confidence is the mean class probability of its candidates.
6. **Clean-up.** Clusters smaller than ``min_cluster_size`` grid pixels are dropped, region NMS
   (mask IoU on the grid, per class, greedy by score; ``region_nms``) removes duplicate
   hypotheses, and the ``max_instances`` best are kept. The clusters of one class are disjoint,
   so region NMS matters when several candidate masks per class are grouped
   (``GroupingParams.per_rank_masks``) or when hypotheses of several runs are merged.

Scalability: identical votes (boxes equal up to ``vote_quantum`` pixels) are merged before NMS,
so ground-truth ("oracle") inputs, where all pixels of an instance vote the same box, cost one
NMS entry per instance even at stride 1. Distinct votes are clustered in exact rounds of at most
``nms_chunk_size`` NMS entries (torchvision's CUDA NMS needs O(n^2) memory), and the
(votes x kept boxes) IoU comparisons of the trace-back are chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.ops import box_iou, nms

from .models.fcrn import resize_to_input
from .targets import decode_boxes

MASK_THRESHOLD = 0.5  # an upsampled cluster indicator >= this is inside the instance mask
_IOU_CHUNK_ELEMENTS = 1 << 22  # largest (votes x kept boxes) IoU block computed at once
_UPSAMPLE_CHUNK = 16  # masks upsampled together (float (chunk, H, W) intermediate)


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
class GroupingParams:
    """Settings of ``group_instances``. The paper gives none of these numbers except top-n.

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
    """

    top_n: int = 1
    nms_threshold: float = 0.5
    region_nms_threshold: float = 0.5
    min_cluster_size: int = 1
    min_score: float = 0.0
    max_instances: int = 100
    per_rank_masks: bool = False
    pre_nms_top_k: int | None = None
    nms_chunk_size: int = 8192
    vote_quantum: float = 1.0 / 16

    def __post_init__(self) -> None:
        if self.top_n < 1:
            raise ValueError(f"top_n must be >= 1, got {self.top_n}")
        for name in ("nms_threshold", "region_nms_threshold"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.min_cluster_size < 1 or self.max_instances < 0 or self.nms_chunk_size < 1:
            raise ValueError("min_cluster_size and nms_chunk_size must be >= 1, max_instances >= 0")
        if self.pre_nms_top_k is not None and self.pre_nms_top_k < 1:
            raise ValueError(f"pre_nms_top_k must be None or >= 1, got {self.pre_nms_top_k}")
        if self.vote_quantum < 0:
            raise ValueError(f"vote_quantum must be >= 0, got {self.vote_quantum}")

    @classmethod
    def from_config(cls, config) -> "GroupingParams":
        """From a ``bridgeseg.config.InstanceConfig`` (the ``instance:`` config section)."""
        return cls(top_n=config.top_n, nms_threshold=config.nms_threshold,
                   region_nms_threshold=config.region_nms_threshold,
                   min_cluster_size=config.min_cluster_size, max_instances=config.max_instances)


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
# Steps 4-5: NMS over the votes and trace-back
# ----------------------------------------------------------------------------------------------

def _merge_identical_votes(boxes: torch.Tensor, scores: torch.Tensor, quantum: float):
    """Group votes whose boxes agree up to ``quantum`` pixels.

    Returns:
        ``(representative, group_scores, inverse)``: (U,) index of each group's best vote (the
        lowest index among ties), (U,) its score, and (P,) each vote's group.
    """
    keys = torch.round(boxes / quantum).long() if quantum > 0 else boxes
    _, inverse = torch.unique(keys, dim=0, return_inverse=True)
    groups = int(inverse.max()) + 1
    group_scores = scores.new_zeros(groups).scatter_reduce(0, inverse, scores, "amax", include_self=False)
    index = torch.arange(len(scores), device=scores.device)
    is_best = scores == group_scores[inverse]
    representative = torch.full((groups,), len(scores), dtype=torch.long, device=scores.device)
    representative.scatter_reduce_(0, inverse[is_best], index[is_best], "amin")
    return representative, group_scores, inverse


def _first_covering_box(boxes: torch.Tensor, kept_boxes: torch.Tensor, threshold: float) -> torch.Tensor:
    """(P,) index of the first of ``kept_boxes`` (K, 4) with IoU > threshold with each box, -1 if none."""
    rows = max(1, _IOU_CHUNK_ELEMENTS // max(1, len(kept_boxes)))
    parts = []
    for start in range(0, len(boxes), rows):
        covers = box_iou(boxes[start:start + rows], kept_boxes) > threshold
        first = covers.int().argmax(dim=1)  # argmax returns the first maximum
        parts.append(torch.where(covers.any(dim=1), first, -1))
    return torch.cat(parts) if parts else boxes.new_zeros(0, dtype=torch.long)


def _greedy_nms_with_traceback(boxes: torch.Tensor, threshold: float, chunk_size: int,
                               max_rounds: int | None):
    """Greedy NMS + trace-back of boxes already sorted by descending score.

    Works in rounds: NMS over the first ``chunk_size`` unassigned boxes, then every unassigned
    box is traced back to the boxes kept in this round. Boxes left unassigned can only be kept
    by, or traced to, later boxes, so the rounds reproduce one greedy NMS over all boxes.

    Returns:
        ``(kept, assignment)``: (K,) positions of the kept boxes, ascending; (U,) long, the row in
        ``kept`` of each box's cluster (-1 only when ``max_rounds`` stopped early).
    """
    assignment = torch.full((len(boxes),), -1, dtype=torch.long, device=boxes.device)
    pending = torch.arange(len(boxes), device=boxes.device)
    kept_parts, num_kept, rounds = [], 0, 0
    while len(pending) and (max_rounds is None or rounds < max_rounds):
        chunk = pending[:chunk_size]
        # scores by rank: torchvision's NMS then follows our stable order, ties included
        rank_scores = torch.arange(len(chunk), 0, -1, device=boxes.device, dtype=boxes.dtype)
        kept = chunk[nms(boxes[chunk], rank_scores, threshold).sort().values]
        assignment[kept] = torch.arange(num_kept, num_kept + len(kept), device=boxes.device)
        rest = pending[assignment[pending] < 0]
        cover = _first_covering_box(boxes[rest], boxes[kept], threshold)
        assignment[rest] = torch.where(cover >= 0, cover + num_kept, -1)
        pending = rest[cover < 0]  # float ties at the threshold carry over and are kept later
        kept_parts.append(kept)
        num_kept += len(kept)
        rounds += 1
    kept = torch.cat(kept_parts) if kept_parts else pending[:0]
    return kept, assignment


def cluster_votes(boxes: torch.Tensor, scores: torch.Tensor, nms_threshold: float,
                  chunk_size: int = 8192, top_k: int | None = None,
                  quantum: float = 1.0 / 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy NMS over the votes of one class, and the kept box each vote is traced back to.

    Votes whose boxes agree up to ``quantum`` pixels form one NMS entry (scored by, and
    represented by the box of, their best vote) and share its cluster.

    Args:
        boxes: (P, 4) xyxy votes.
        scores: (P,) their scores.
        nms_threshold: box IoU above which a vote is suppressed by / traced back to a kept box.
        chunk_size: most entries handed to one torchvision NMS call (the result does not
            depend on it).
        top_k: None: exact greedy NMS. k: only the k best entries can be kept; votes no kept box
            covers get assignment -1.
        quantum: the vote-merging grid in pixels (0: exact duplicates only).

    Returns:
        ``(kept, assignment)``: (K,) long indices into the P votes of the kept boxes, in
        descending score order (ties: lower index first); (P,) long, each vote's cluster
        0..K-1, the first kept box whose IoU with it exceeds ``nms_threshold`` (a kept vote
        maps to itself).
    """
    device = boxes.device
    if len(boxes) == 0:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty.clone()
    boxes = boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()
    scores = scores.to(boxes.dtype)
    representative, group_scores, inverse = _merge_identical_votes(boxes, scores, quantum)
    order = _descending(group_scores, representative)
    max_rounds = None if top_k is None else 1
    size = chunk_size if top_k is None else top_k
    kept_positions, group_assignment = _greedy_nms_with_traceback(boxes[representative[order]],
                                                                  nms_threshold, size, max_rounds)
    assignment = torch.empty_like(group_assignment)
    assignment[order] = group_assignment
    return representative[order[kept_positions]], assignment[inverse]


def _descending(scores: torch.Tensor, tie_break: torch.Tensor) -> torch.Tensor:
    """Permutation sorting ``scores`` descending, equal scores by ascending ``tie_break``."""
    by_tie = tie_break.argsort(stable=True)
    return by_tie[scores[by_tie].argsort(descending=True, stable=True)]


# ----------------------------------------------------------------------------------------------
# Step 6: region NMS
# ----------------------------------------------------------------------------------------------

def _greedy_keep(iou: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS given a (K, K) IoU matrix: (K,) bool, which entries survive.

    Vectorised fixed-point iteration of "kept iff no earlier kept entry overlaps it": entry j is
    settled once all earlier ones are, so it converges (to the unique greedy answer) in at most
    K rounds, in practice as many as the longest suppression chain.
    """
    order = scores.argsort(descending=True, stable=True)
    suppresses = (iou[order][:, order] > threshold).triu(diagonal=1)  # [i, j]: earlier i hits j
    keep = torch.ones(len(order), dtype=torch.bool, device=iou.device)
    for _ in range(len(order)):
        updated = ~(suppresses & keep.unsqueeze(1)).any(dim=0)
        if torch.equal(updated, keep):
            break
        keep = updated
    survives = torch.empty_like(keep)
    survives[order] = keep
    return survives


def mask_iou(masks: torch.Tensor) -> torch.Tensor:
    """(K, ...) bool masks -> (K, K) float pairwise IoU (0 between two empty masks)."""
    flat = masks.flatten(1).float()
    area = flat.sum(dim=1)
    inter = flat @ flat.T
    return inter / (area.unsqueeze(1) + area.unsqueeze(0) - inter).clamp(min=1)


def region_nms(masks: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS on mask IoU among hypotheses of the same class (SDS-style region NMS).

    Args:
        masks: (K, H, W) bool.
        scores: (K,) float.
        labels: (K,) long classes; hypotheses of different classes never suppress each other.
        threshold: a hypothesis overlapping a better one of its class by IoU > threshold goes.

    Returns:
        (K',) long indices of the survivors, by descending score (ties: lower index first).
    """
    survives = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        survives[members] = _greedy_keep(mask_iou(masks[members]), scores[members], threshold)
    kept = survives.nonzero().squeeze(1)
    return kept[scores[kept].argsort(descending=True, stable=True)]


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
                  params: GroupingParams):
    """Cluster one candidate mask of one class.

    Args:
        votes: (4, h * w) the class's vote boxes; scores: (h * w,) its probabilities;
        candidates: (h * w,) bool; first_id: the id given to this pass's first hypothesis.

    Returns:
        ``(cluster_map, scores, boxes)``: (h * w,) long hypothesis ids (-1: none), (K,), (K, 4).
    """
    pixels = candidates.nonzero().squeeze(1)
    pixel_scores = scores[pixels]
    kept, assignment = cluster_votes(votes[:, pixels].T, pixel_scores, params.nms_threshold,
                                     params.nms_chunk_size, params.pre_nms_top_k, params.vote_quantum)
    boxes = votes[:, pixels[kept]].T
    member = assignment >= 0
    pixels, assignment, pixel_scores = pixels[member], assignment[member], pixel_scores[member]
    size = torch.bincount(assignment, minlength=len(kept)).to(scores.dtype)
    total = scores.new_zeros(len(kept)).index_add_(0, assignment, pixel_scores)
    cluster_map = torch.full_like(candidates, -1, dtype=torch.long)
    cluster_map[pixels] = assignment + first_id
    return cluster_map, total / size.clamp(min=1), boxes


def _class_hypotheses(votes: torch.Tensor, scores: torch.Tensor, candidates: torch.Tensor,
                      params: GroupingParams) -> _ClassHypotheses:
    """Steps 4-6 for one class: clusters of every pass, size filter, region NMS.

    Args:
        votes: (4, h * w); scores: (h * w,); candidates: (R, h * w) bool, one row per pass.
    """
    maps, all_scores, all_boxes, next_id = [], [], [], 0
    for pass_candidates in candidates:
        cluster_map, pass_scores, pass_boxes = _cluster_pass(votes, scores, pass_candidates, next_id, params)
        maps.append(cluster_map)
        all_scores.append(pass_scores)
        all_boxes.append(pass_boxes)
        next_id += len(pass_scores)
    hypotheses = _ClassHypotheses(torch.stack(maps), torch.cat(all_scores), torch.cat(all_boxes))
    hypotheses = hypotheses.select(hypotheses.sizes() >= params.min_cluster_size)
    if len(candidates) > 1 and len(hypotheses.scores) > 1:
        hypotheses = hypotheses.select(_greedy_keep(hypotheses.overlaps(), hypotheses.scores,
                                                    params.region_nms_threshold))
    return hypotheses


def upsample_masks(masks: torch.Tensor, stride: int, image_size: tuple[int, int]) -> torch.Tensor:
    """Grid masks -> image masks with the geometry of ``bridgeseg.models.fcrn.resize_to_input``.

    The indicator is resampled bilinearly with ``align_corners=True`` onto the
    (h - 1) * stride + 1 grid (position i on input pixel i * stride), rows and columns past the
    last centre repeat the edge, and the result is thresholded at ``MASK_THRESHOLD`` (>=).

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
        out[start:start + _UPSAMPLE_CHUNK] = resize_to_input(chunk, image_size, stride)[0] >= MASK_THRESHOLD
    return out


def _pass_candidates(probs: torch.Tensor, params: GroupingParams) -> torch.Tensor:
    """(R, C - 1, h, w) bool candidate masks, one per pass (R = top_n with per_rank_masks, else 1)."""
    ranks = range(1, params.top_n + 1) if params.per_rank_masks else (params.top_n,)
    confident = probs[1:] >= params.min_score
    return torch.stack([candidate_masks(probs, rank) & confident for rank in ranks])


def _check_inputs(probs: torch.Tensor, transforms: torch.Tensor) -> None:
    if probs.dim() != 3 or transforms.dim() != 3:
        raise ValueError(f"expected probs (C, h, w) and transforms (4(C-1), h, w), got "
                         f"{tuple(probs.shape)} and {tuple(transforms.shape)}")
    if transforms.shape != (4 * (probs.shape[0] - 1), *probs.shape[1:]):
        raise ValueError(f"transforms {tuple(transforms.shape)} do not match probs {tuple(probs.shape)}")


def _paint_clusters(grid_masks: torch.Tensor, hypotheses: _ClassHypotheses, rows: torch.Tensor,
                    ids: torch.Tensor) -> None:
    """Set ``grid_masks[r]`` (n, h * w) to the pixels of hypothesis ``ids[r]`` for every r in ``rows``."""
    row_of = torch.full((len(hypotheses.scores),), -1, dtype=torch.long, device=grid_masks.device)
    row_of[ids[rows]] = rows
    for cluster_map in hypotheses.cluster_maps:
        pixels = (cluster_map >= 0).nonzero().squeeze(1)
        target = row_of[cluster_map[pixels]]
        chosen = target >= 0
        grid_masks[target[chosen], pixels[chosen]] = True


def group_instances(probs: torch.Tensor, transforms: torch.Tensor, stride: int, image_size: tuple[int, int],
                    params: GroupingParams = GroupingParams()) -> Instances:
    """Instances of one image from its semantic and localization outputs (paper section 2.1).

    Args:
        probs: (C, h, w) softmax probabilities, class 0 = background; position (i, j) is input
            pixel (i * stride, j * stride).
        transforms: (4 * (C - 1), h, w) on the same grid (``bridgeseg.targets`` encoding).
        stride: the grid's stride in input pixels.
        image_size: (H, W) of the input image.
        params: see ``GroupingParams``.

    Returns:
        ``Instances`` on the inputs' device, by descending score: masks (K, H, W).
    """
    _check_inputs(probs, transforms)
    height, width = probs.shape[-2:]
    probs = probs.float()
    candidates = _pass_candidates(probs, params).flatten(2)  # (R, C - 1, h * w)
    votes = vote_boxes(transforms.float(), stride).flatten(2)  # (C - 1, 4, h * w)
    flat_probs = probs.flatten(1)
    present = candidates.any(dim=2).any(dim=0).nonzero().squeeze(1).tolist()
    per_class = {k: _class_hypotheses(votes[k], flat_probs[k + 1], candidates[:, k], params) for k in present}
    per_class = {k: hyp for k, hyp in per_class.items() if len(hyp.scores)}
    if not per_class or params.max_instances == 0:
        return Instances.empty(image_size, probs.device)
    scores = torch.cat([hyp.scores for hyp in per_class.values()])
    labels = torch.cat([torch.full_like(hyp.scores, k + 1, dtype=torch.long) for k, hyp in per_class.items()])
    boxes = torch.cat([hyp.boxes for hyp in per_class.values()])
    local_ids = torch.cat([torch.arange(len(hyp.scores), device=probs.device) for hyp in per_class.values()])
    best = scores.argsort(descending=True, stable=True)[:params.max_instances]
    grid_masks = torch.zeros(len(best), height * width, dtype=torch.bool, device=probs.device)
    for k, hyp in per_class.items():
        _paint_clusters(grid_masks, hyp, (labels[best] == k + 1).nonzero().squeeze(1), local_ids[best])
    masks = upsample_masks(grid_masks.view(-1, height, width), stride, image_size)
    return Instances(masks=masks, labels=labels[best], scores=scores[best], boxes=boxes[best])

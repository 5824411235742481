"""Greedy NMS for the grouping (paper section 2.1 steps 4-6): box NMS over votes with the
trace-back of every suppressed vote to the box that suppressed it, and region (mask IoU) NMS.

Pure tensor functions; imports nothing of bridgeseg's but ``masks``. Identical votes (boxes equal
up to a quantum) are merged before NMS, so ground-truth ("oracle") inputs, where all pixels of an
instance vote the same box, cost one NMS entry per instance even at stride 1. Distinct votes are
clustered in exact rounds of at most ``chunk_size`` NMS entries (torchvision's CUDA NMS needs
O(n^2) memory), and the (votes x kept boxes) IoU comparisons of the trace-back are chunked.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_iou, nms

from .masks import mask_iou

_IOU_CHUNK_ELEMENTS = 1 << 22  # largest (votes x kept boxes) IoU block computed at once


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

def greedy_keep(iou: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
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
        member_masks = masks[members]
        survives[members] = greedy_keep(mask_iou(member_masks, member_masks), scores[members], threshold)
    kept = survives.nonzero().squeeze(1)
    return kept[scores[kept].argsort(descending=True, stable=True)]

"""Instance masks at the class map's resolution (the last step of the grouping).

The grouping clusters cells of the output grid (stride s). Upsampling a cluster's indicator gives
stride-s octagons that ignore the class map, which is much sharper. Instead, every image pixel
that is a candidate of class c *at image resolution* (its upsampled probabilities rank c among the
top n, or for n = 1 the class map says c) joins the class-c cluster of its grid neighbourhood: the
four grid cells around the pixel (the cells ``geometry.resize_to_input`` interpolates between)
vote for their clusters with their bilinear weights, and the cluster with the largest total
wins. Grid cells that belong to no cluster first take the cluster of a neighbouring cell (for at
most ``FILL_STEPS`` cells), so thin parts between grid samples are not lost. A mask is therefore
a subset of its class's candidate pixels, follows the class map's boundaries, and two touching
instances of one class meet along the line where their clusters' weights are equal.

Pure tensor functions; no config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import interpolation, upsampled_rows

FILL_STEPS = 2  # grid cells a cluster may reach beyond its own cells to claim pixels of its class
_ROW_CHUNK_PIXELS = 1 << 21  # image pixels assigned per block (four (rows, W) id and weight maps each)
_BOX_CHUNK = 16  # boxes tested together against every mask pixel ((chunk, pixels) comparisons)


def fill_gaps(ids: torch.Tensor, steps: int = FILL_STEPS) -> torch.Tensor:
    """Cluster ids grown into neighbouring unassigned cells.

    Args:
        ids: (h, w) long cluster ids, -1 = no cluster.
        steps: how many times an unassigned cell takes an id of its 3 x 3 neighbourhood (the
            largest one where several meet).

    Returns:
        (h, w) long.
    """
    filled = ids.clone()
    for _ in range(steps):
        empty = filled < 0
        if not bool(empty.any()):
            break
        grown = F.max_pool2d((filled + 1).float()[None, None], 3, stride=1, padding=1)[0, 0].long() - 1
        filled = torch.where(empty, grown, filled)
    return filled


def assign_pixels(ids: torch.Tensor, stride: int, image_size: tuple[int, int]) -> torch.Tensor:
    """The cluster each image pixel's grid neighbourhood belongs to.

    Args:
        ids: (h, w) long cluster ids on the grid (-1 = none), already grown by ``fill_gaps``.
        stride: the grid's stride; image_size: (H, W).

    Returns:
        (H, W) long: per pixel the id with the largest total bilinear weight among its four
        surrounding grid cells (ties: the first of lower-left, lower-right, upper-left,
        upper-right), -1 where none of them has a cluster.
    """
    height, width = image_size
    cells_y, cells_x = ids.shape
    low_y, up_y, weight_y = interpolation(height, cells_y, stride, ids.device)
    low_x, up_x, weight_x = interpolation(width, cells_x, stride, ids.device)
    out = torch.empty(image_size, dtype=torch.long, device=ids.device)
    step = max(1, _ROW_CHUNK_PIXELS // max(1, width))
    for start in range(0, height, step):
        rows = slice(start, min(start + step, height))
        wy = weight_y[rows].view(-1, 1)
        corners = torch.stack([ids[low_y[rows]][:, low_x], ids[low_y[rows]][:, up_x],
                               ids[up_y[rows]][:, low_x], ids[up_y[rows]][:, up_x]])  # (4, rows, W)
        weights = torch.stack([(1 - wy) * (1 - weight_x), (1 - wy) * weight_x, wy * (1 - weight_x), wy * weight_x])
        weights = weights * (corners >= 0)
        # corner by corner on contiguous (rows, W) planes: reductions over the 4 corners are
        # strided and several times slower on a CPU
        winner, best = corners[0], None
        for i in range(4):
            support = sum(weights[j] * (corners[j] == corners[i]) for j in range(4))
            if best is None:
                best = support
                continue
            better = support > best  # strict: ties keep the earlier corner
            best, winner = torch.where(better, support, best), torch.where(better, corners[i], winner)
        out[rows] = torch.where(best > 0, winner, -1)
    return out


def image_candidates(probs: torch.Tensor, stride: int, image_size: tuple[int, int], rank: int,
                     min_score: float) -> torch.Tensor:
    """Candidate pixels of every foreground class at image resolution.

    Args:
        probs: (C, h, w) grid probabilities.
        rank: a pixel is a candidate of the classes among its ``rank`` highest upsampled scores
            (ties: lower class index first) whose score is positive and at least ``min_score``.

    Returns:
        (C - 1, H, W) bool; row k is class k + 1.
    """
    out = torch.zeros(probs.shape[0] - 1, *image_size, dtype=torch.bool, device=probs.device)
    for rows, block in upsampled_rows(probs, stride, image_size):
        ranked = block.argsort(dim=0, descending=True, stable=True)[:rank]
        in_top = torch.zeros(block.shape, dtype=torch.bool, device=probs.device).scatter_(0, ranked, True)
        out[:, rows] = in_top[1:] & (block[1:] > 0) & (block[1:] >= min_score)
    return out


class ImageCandidates:
    """Candidate pixels of each class and rank at image resolution, computed once when first needed.

    ``candidates(rank, label)`` is (H, W) bool; with no score floor, the top-1 candidates are the
    class map itself when one is given (the argmax of the upsampled probabilities, or ground truth).
    """

    def __init__(self, probs: torch.Tensor, stride: int, image_size: tuple[int, int], min_score: float,
                 class_map: torch.Tensor | None) -> None:
        self.probs, self.stride, self.image_size, self.min_score = probs, stride, image_size, min_score
        self.class_map = class_map if min_score == 0 else None  # argmax == top-1 candidates when no floor
        self._by_rank: dict[int, torch.Tensor] = {}

    def __call__(self, rank: int, label: int) -> torch.Tensor:
        """(H, W) bool candidates of class ``label`` among the top ``rank``."""
        if rank == 1 and self.class_map is not None:
            return self.class_map == label
        if rank not in self._by_rank:
            self._by_rank[rank] = image_candidates(self.probs, self.stride, self.image_size, rank, self.min_score)
        return self._by_rank[rank][label - 1]


def pixels_in_boxes(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """How many pixels of each mask lie in each box.

    Args:
        masks: (K, H, W) bool.
        boxes: (B, 4) xyxy in image pixels; pixel (y, x) is inside when its centre (x + 0.5,
            y + 0.5) is.

    Returns:
        (B, K) long: entry (b, k) counts the pixels of mask k inside box b.
    """
    count = masks.shape[0]
    # pixel x is inside [x1, x2] when x1 <= x + 0.5 <= x2: columns ceil(x1 - 0.5) .. floor(x2 - 0.5)
    first = torch.ceil(boxes[:, :2] - 0.5).long()
    last = torch.floor(boxes[:, 2:] - 0.5).long()
    owner, ys, xs = masks.nonzero(as_tuple=True)  # only the masks' pixels: the masks are sparse
    inside = torch.zeros(len(boxes), count, dtype=torch.long, device=masks.device)
    for start in range(0, len(boxes), _BOX_CHUNK):
        b = slice(start, start + _BOX_CHUNK)
        hit = ((xs >= first[b, :1]) & (xs <= last[b, :1]) & (ys >= first[b, 1:]) & (ys <= last[b, 1:])).long()
        inside[b].index_add_(1, owner, hit)
    return inside


def merge_fragments(masks: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, threshold: float,
                    class_profiles: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Join the fragments of one object: clusters that each lie inside the other's box.

    Each cluster's box is where its pixels' votes say the whole object is. When a noisy
    localization map splits an object, the pieces' boxes all describe that object, so each piece
    lies inside the others' boxes; two different objects, however close, each lie mostly outside
    the other's box (and a small object inside a large one's box does not contain the large one).
    So cluster j joins cluster i (the first such i in the order given, which is by descending
    score) when at least ``threshold`` of j's pixels are inside i's box and at least ``threshold``
    of i's pixels are inside j's box. Empty masks are dropped.

    A class map that is unsure of an object's class splits it between classes (the top of a U
    called "frame", its arms "U"), and each class's clusters are then pieces with one box. Given
    ``class_profiles``, such pieces join too, and the whole takes the class of the first (best
    scoring) piece. Only unsure pieces do: cluster j of another class than i joins i when, besides
    the box rule, j's pixels give i's class at least half the probability they give j's own (two
    distinct objects that the class map is sure of, even with one box, stay apart), and the two
    share under half of the smaller one's pixels (clusters that share more are the runner-up
    hypotheses of one object that ``top_n > 1`` asks for).

    Args:
        masks: (K, H, W) bool, by descending score.
        labels: (K,) classes 1..C-1; without ``class_profiles`` only clusters of one class merge.
        boxes: (K, 4) xyxy the clusters' boxes in image pixels.
        threshold: in (0, 1]; 0 merges nothing (only empty masks are dropped).
        class_profiles: None, or (K, C) each cluster's mean class probabilities: also join
            unsure pieces of different classes (above).

    Returns:
        ``(masks, keep)``: the (K, H, W) masks with fragments joined into their first cluster,
        and the (K,) bool of clusters that remain.
    """
    areas = masks.flatten(1).sum(1)
    keep = areas > 0
    if threshold <= 0 or len(labels) < 2:
        return masks, keep
    inside = pixels_in_boxes(masks, boxes).double()  # (box i, mask j)
    fraction = inside / areas.clamp(min=1).double()[None, :]
    mutual = (fraction >= threshold) & (fraction.T >= threshold) & keep[:, None] & keep[None, :]
    same_class = labels[:, None] == labels[None, :]
    if class_profiles is None:
        mutual &= same_class
    else:
        for i, j in (mutual & ~same_class).triu(1).nonzero().tolist():
            unsure = 2 * class_profiles[j, labels[i]] >= class_profiles[j, labels[j]]
            shared = int((masks[i] & masks[j]).sum())
            if not unsure or 2 * shared >= min(int(areas[i]), int(areas[j])):
                mutual[i, j] = mutual[j, i] = False
    mutual.fill_diagonal_(False)
    if not bool(mutual.any()):
        return masks, keep
    masks = masks.clone()
    owner = list(range(len(labels)))
    pairs = mutual.triu(1).nonzero().tolist()
    for i, j in pairs:  # row-major: for each j, its earliest i comes first
        if owner[j] == j and owner[i] == i:
            owner[j] = i
            masks[i] |= masks[j]
            keep[j] = False
    return masks, keep

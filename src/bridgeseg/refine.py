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
instances of one class meet along the line where their clusters' weights are equal. Every class
is assigned in the same pass over the image: a pixel reads the cluster map of its own class.

Pure tensor functions; no config.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .geometry import interpolation, upsampled_rows

FILL_STEPS = 2  # grid cells a cluster may reach beyond its own cells to claim pixels of its class
_ROW_CHUNK_PIXELS = 1 << 21  # image pixels assigned per block (four (rows, W) id and weight maps each)


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


def assign_pixels(ids: torch.Tensor, stride: int, image_size: tuple[int, int],
                  layers: torch.Tensor | None = None) -> torch.Tensor:
    """The cluster each image pixel's grid neighbourhood belongs to.

    Args:
        ids: (h, w) long cluster ids on the grid (-1 = none), already grown by ``fill_gaps``; or
            (L, h, w), one such map per layer (one per class: a pixel reads the map of its class).
        stride: the grid's stride; image_size: (H, W).
        layers: None (every pixel reads layer 0), or (H, W) long: the layer of ``ids`` each pixel
            reads, -1 for none.

    Returns:
        (H, W) long: per pixel the id with the largest total bilinear weight among its four
        surrounding grid cells of its layer (ties: the first of lower-left, lower-right,
        upper-left, upper-right), -1 where none of them has a cluster or the pixel reads no layer.
    """
    height, width = image_size
    cells_y, cells_x = ids.shape[-2:]
    grid = cells_y * cells_x
    flat = torch.cat([ids.reshape(-1), ids.new_full((1,), -1)])  # the last entry: "no layer"
    low_y, up_y, weight_y = interpolation(height, cells_y, stride, ids.device)
    low_x, up_x, weight_x = interpolation(width, cells_x, stride, ids.device)
    out = torch.empty(image_size, dtype=torch.long, device=ids.device)
    step = max(1, _ROW_CHUNK_PIXELS // max(1, width))
    for start in range(0, height, step):
        rows = slice(start, min(start + step, height))
        wy = weight_y[rows].view(-1, 1)
        if layers is None:
            base = torch.zeros(1, 1, dtype=torch.long, device=ids.device)
        else:
            layer = layers[rows]
            base = torch.where(layer >= 0, layer * grid, -1)
        cells = [(low_y, low_x), (low_y, up_x), (up_y, low_x), (up_y, up_x)]
        corners = torch.stack([flat[torch.where(base >= 0, base + (ys[rows] * cells_x).view(-1, 1) + xs, len(flat) - 1)]
                               for ys, xs in cells])  # (4, rows, W)
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


def ranked_classes(probs: torch.Tensor, stride: int, image_size: tuple[int, int], rank: int,
                   min_score: float) -> torch.Tensor:
    """Each pixel's ``rank`` highest-scoring classes at image resolution: its candidate classes.

    Args:
        probs: (C, h, w) grid probabilities, upsampled with ``resize_to_input``'s geometry.
        rank: how many classes per pixel (ties: lower class index first).
        min_score: a class is a candidate only where its score is positive and at least this.

    Returns:
        (rank, H, W) long: row j is each pixel's (j + 1)-th class, 0 where that is the
        background or not a candidate.
    """
    out = torch.empty(rank, *image_size, dtype=torch.long, device=probs.device)
    for rows, block in upsampled_rows(probs, stride, image_size):
        if rank == 1:
            top = block.max(dim=0, keepdim=True)  # first index among ties, as a stable sort's
            scores, classes = top.values, top.indices
        else:
            scores, classes = block.sort(dim=0, descending=True, stable=True)
            scores, classes = scores[:rank], classes[:rank]
        out[:, rows] = torch.where((scores > 0) & (scores >= min_score), classes, 0)
    return out


class ImageCandidates:
    """Candidate classes of each pixel at image resolution (``ranked_classes``), computed once per
    rank when first needed.

    ``candidates(rank)`` is (rank, H, W) long. With no score floor, the top-1 candidates are the
    class map itself when one is given (the argmax of the upsampled probabilities, or ground truth;
    values that are no foreground class, such as a void 255, count as background).
    """

    def __init__(self, probs: torch.Tensor, stride: int, image_size: tuple[int, int], min_score: float,
                 class_map: torch.Tensor | None) -> None:
        self.probs, self.stride, self.image_size, self.min_score = probs, stride, image_size, min_score
        self.class_map = class_map if min_score == 0 else None  # argmax == top-1 candidates when no floor
        self._by_rank: dict[int, torch.Tensor] = {}

    def __call__(self, rank: int) -> torch.Tensor:
        """(rank, H, W) long: each pixel's candidate classes by rank, 0 = none."""
        if rank not in self._by_rank:
            if rank == 1 and self.class_map is not None:
                known = (self.class_map > 0) & (self.class_map < self.probs.shape[0])
                self._by_rank[rank] = torch.where(known, self.class_map.long(), 0)[None]
            else:
                self._by_rank[rank] = ranked_classes(self.probs, self.stride, self.image_size, rank, self.min_score)
        return self._by_rank[rank]


def mask_extents(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool -> (K, 4) long ``[y0, y1, x0, x1]``: each mask's bounding rows ``y0 .. y1 - 1``
    and columns ``x0 .. x1 - 1``; all 0 for an empty mask (``pixel_extents`` from its pixels)."""
    extents = torch.zeros(masks.shape[0], 4, dtype=torch.long, device=masks.device)
    for hit, column in ((masks.any(dim=2), 0), (masks.any(dim=1), 2)):  # (K, H) rows, (K, W) columns
        present = hit.any(dim=1)
        index = torch.arange(hit.shape[1], device=masks.device)
        first = torch.where(hit, index, hit.shape[1]).min(dim=1).values
        last = torch.where(hit, index, -1).max(dim=1).values + 1
        extents[:, column] = torch.where(present, first, 0)
        extents[:, column + 1] = torch.where(present, last, 0)
    return extents


def pixel_extents(owner: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, count: int) -> torch.Tensor:
    """``mask_extents`` of ``count`` masks from their pixels: pixel i (``ys[i]``, ``xs[i]``) is in
    mask ``owner[i]`` (1-D long tensors of one length)."""
    extents = torch.zeros(count, 4, dtype=torch.long, device=owner.device)
    if not len(owner):
        return extents
    for column, values in ((0, ys), (2, xs)):
        first = torch.full((count,), torch.iinfo(torch.long).max, dtype=torch.long, device=owner.device)
        last = torch.full((count,), -1, dtype=torch.long, device=owner.device)
        first.scatter_reduce_(0, owner, values, "amin")
        last.scatter_reduce_(0, owner, values, "amax")
        present = last >= 0
        extents[:, column] = torch.where(present, first, 0)
        extents[:, column + 1] = torch.where(present, last + 1, 0)
    return extents


def pixels_in_boxes(masks: torch.Tensor, boxes: torch.Tensor, extents: torch.Tensor | None = None) -> torch.Tensor:
    """How many pixels of each mask lie in each box.

    Args:
        masks: (K, H, W) bool.
        boxes: (B, 4) xyxy in image pixels; pixel (y, x) is inside when its centre (x + 0.5,
            y + 0.5) is.
        extents: the masks' ``mask_extents`` when already known.

    Returns:
        (B, K) long: entry (b, k) counts the pixels of mask k inside box b.
    """
    # pixel x is inside [x1, x2] when x1 <= x + 0.5 <= x2: columns ceil(x1 - 0.5) .. floor(x2 - 0.5)
    first = torch.ceil(boxes[:, :2] - 0.5).long()
    end = torch.floor(boxes[:, 2:] - 0.5).long() + 1  # one past the last column / row
    inside = torch.zeros(len(boxes), masks.shape[0], dtype=torch.long, device=masks.device)
    extents = mask_extents(masks) if extents is None else extents
    for k, (y0, y1, x0, x1) in enumerate(extents.tolist()):
        if y1 == y0:
            continue
        # a summed-area table of the mask's bounding box: four look-ups per box
        table = F.pad(masks[k, y0:y1, x0:x1].long().cumsum(0).cumsum(1), (1, 0, 1, 0))  # (h + 1, w + 1)
        height, width = y1 - y0, x1 - x0
        ya, yb = (first[:, 1] - y0).clamp(0, height), (end[:, 1] - y0).clamp(0, height)
        xa, xb = (first[:, 0] - x0).clamp(0, width), (end[:, 0] - x0).clamp(0, width)
        yb, xb = torch.maximum(ya, yb), torch.maximum(xa, xb)  # an inverted box holds nothing
        inside[:, k] = table[yb, xb] - table[ya, xb] - table[yb, xa] + table[ya, xa]
    return inside


def _shared_pixels(masks: torch.Tensor, extents: torch.Tensor, i: int, j: int) -> int:
    """Pixels masks i and j share, counted where their bounding boxes meet."""
    y0, x0 = torch.maximum(extents[i, [0, 2]], extents[j, [0, 2]]).tolist()
    y1, x1 = torch.minimum(extents[i, [1, 3]], extents[j, [1, 3]]).tolist()
    if y1 <= y0 or x1 <= x0:
        return 0
    return int((masks[i, y0:y1, x0:x1] & masks[j, y0:y1, x0:x1]).sum())


def merge_fragments(masks: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor, threshold: float,
                    class_profiles: torch.Tensor | None = None,
                    extents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        extents: the masks' ``mask_extents`` when already known.

    Returns:
        ``(masks, keep)``: the (K, H, W) masks with fragments joined into their first cluster,
        and the (K,) bool of clusters that remain.
    """
    extents = mask_extents(masks) if extents is None else extents
    keep = extents[:, 1] > extents[:, 0]
    if threshold <= 0 or len(labels) < 2:
        return masks, keep
    height, width = masks.shape[-2:]
    whole = torch.tensor([[0.0, 0.0, float(width), float(height)]], dtype=boxes.dtype, device=boxes.device)
    inside = pixels_in_boxes(masks, torch.cat([boxes, whole]), extents)  # (box i, mask j); last: the image
    inside, areas = inside[:-1].double(), inside[-1]
    fraction = inside / areas.clamp(min=1).double()[None, :]
    mutual = (fraction >= threshold) & (fraction.T >= threshold) & keep[:, None] & keep[None, :]
    same_class = labels[:, None] == labels[None, :]
    if class_profiles is None:
        mutual &= same_class
    else:
        for i, j in (mutual & ~same_class).triu(1).nonzero().tolist():
            unsure = 2 * class_profiles[j, labels[i]] >= class_profiles[j, labels[j]]
            shared = _shared_pixels(masks, extents, i, j)
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

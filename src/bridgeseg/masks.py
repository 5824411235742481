"""Operations on sets of binary masks shared by post-processing and evaluation.

Imports nothing of bridgeseg's.
"""

from __future__ import annotations

import torch


def mask_iou(pred: torch.Tensor, gt: torch.Tensor, void: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise IoU between two sets of masks.

    Pixel counts are computed with a float64 matrix product, so they are exact (and unaffected
    by TF32 on CUDA). Void pixels are removed from both masks before counting, i.e. they count
    neither in the intersection nor in the union.

    Args:
        pred: (P, H, W) bool masks.
        gt: (G, H, W) bool masks, on the same device as ``pred`` (``pred`` itself for the
            pairwise overlaps of one set).
        void: (H, W) bool pixels left out, or None.

    Returns:
        (P, G) float64 IoU on ``pred``'s device; 0 where the union is empty.
    """
    if pred.dim() != 3 or gt.dim() != 3 or pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"mask_iou expects (P, H, W) and (G, H, W) masks, got {tuple(pred.shape)} "
                         f"and {tuple(gt.shape)}")
    if void is not None and void.shape != pred.shape[1:]:
        raise ValueError(f"void must be (H, W) = {tuple(pred.shape[1:])}, got {tuple(void.shape)}")
    num_pixels = pred.shape[1] * pred.shape[2]
    pred_flat = pred.reshape(pred.shape[0], num_pixels).to(torch.float64)
    gt_flat = gt.reshape(gt.shape[0], num_pixels).to(device=pred.device, dtype=torch.float64)
    if void is not None:
        keep = (~void.to(device=pred.device, dtype=torch.bool)).reshape(1, num_pixels).to(torch.float64)
        pred_flat = pred_flat * keep
        gt_flat = gt_flat * keep
    intersection = pred_flat @ gt_flat.T
    union = pred_flat.sum(dim=1, keepdim=True) + gt_flat.sum(dim=1).unsqueeze(0) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1.0), torch.zeros_like(union))

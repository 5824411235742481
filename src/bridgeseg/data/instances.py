"""Ground-truth instances from label maps."""

from __future__ import annotations

import torch

from .io import VOID


def instances_from_maps(instance_map: torch.Tensor, semantic_map: torch.Tensor, num_classes: int,
                        void_value: int = VOID) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split an instance-id map into one mask per instance.

    Args:
        instance_map: (H, W) integer ids; 0 = background, ``void_value`` = void.
        semantic_map: (H, W) class labels; an instance's class is the most frequent foreground
            class among its pixels (an id whose pixels are all background or void is skipped).
        num_classes: C, background included.

    Returns:
        ``(masks (G, H, W) bool, labels (G,) long in 1..C-1, void (H, W) bool)``, instances in
        increasing id order.
    """
    instance_map = torch.as_tensor(instance_map)
    semantic_map = torch.as_tensor(semantic_map).to(instance_map.device)
    void = instance_map == void_value
    ids = torch.unique(instance_map[(instance_map != 0) & ~void])
    if len(ids) == 0:
        return (torch.zeros((0, *instance_map.shape), dtype=torch.bool, device=instance_map.device),
                torch.zeros(0, dtype=torch.long, device=instance_map.device), void)
    masks = instance_map.unsqueeze(0) == ids.view(-1, 1, 1)
    foreground = (semantic_map > 0) & (semantic_map < num_classes)
    votes = torch.zeros(len(ids), num_classes, device=instance_map.device)
    for index in range(len(ids)):
        classes = semantic_map[masks[index] & foreground].long()
        votes[index].index_add_(0, classes, torch.ones_like(classes, dtype=torch.float))
    has_class = votes.sum(dim=1) > 0
    return masks[has_class], votes[has_class].argmax(dim=1), void

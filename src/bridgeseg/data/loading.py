"""From a ``DataConfig`` to batches: dataset construction, deterministic step-indexed sampling.

The order of training samples is a pure function of (seed, step): step ``k`` takes the global
sample positions ``k * B .. (k + 1) * B - 1`` of an endless stream of epochs, each epoch a seeded
permutation, and each sample is augmented with a generator seeded by (seed, position). A resumed
run therefore sees exactly the batches it would have seen, with any number of workers.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config import Config, DataConfig
from .augment import LABEL_KEYS, TrainAugmentation, paste_objects, to_tensors
from .base import SegmentationDataset
from .registry import open_dataset


class BadSampleError(ValueError):
    """A training image or label could not be read; the message (one line) names the file.

    Raised in a DataLoader worker, it reaches the main process rebuilt from a message that holds
    the worker's whole traceback ("Caught BadSampleError in DataLoader worker process 0. Original
    Traceback ..."); only its last line, the original message, is kept.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        lines = [line for line in str(message).splitlines() if line.strip()]
        if len(lines) > 1 and marker in lines[-1]:
            message = lines[-1].split(marker, 1)[1]
        super().__init__(message)


def build_dataset(config: DataConfig, split: str, with_instances: bool = False) -> SegmentationDataset:
    """The dataset of ``config.dataset`` (a name of ``data.registry.DATASETS``) at ``config.root``
    for ``split`` (e.g. ``config.training_split``), with instance labels when asked for."""
    return open_dataset(config.dataset, Path(config.root), split, with_instances=with_instances,
                        sbd_root=config.sbd_root or None)


def loader_workers(setting: int | str, device_type: str) -> int:
    """The loader processes for ``data.workers``: the number itself, or for ``auto`` what suits the
    machine. On the CPU: none below 8 cores (a worker only takes a core from the network,
    whose step costs ten times the loader's: benchmarks/train_loop_overhead.py), then one per 8
    cores. Nor a loader thread: on 2 cores one took the data wait from 18 to 1 ms but made the
    step slower (105 to 119 ms), its tensor work competing with the network's threads. Beside a
    GPU the CPU is otherwise idle: the cores of this process's share of the machine
    (``LOCAL_WORLD_SIZE`` processes under torchrun) less one, at least 1 and at most 8."""
    if setting != "auto":
        return int(setting)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    if device_type == "cpu":
        return share // 8
    return max(1, min(8, share - 1))


class SampleCache:
    """Decoded samples (``{"image", "semantic", "instance"?, "name"}``) kept in memory up to a budget.

    Label maps are stored, and come back, in the smallest integer type that holds them (the
    augmentation keeps a label's type; ``to_tensors`` makes it int64); stored arrays are read-only,
    so an augmentation that wrote into one would fail loudly rather than change the data. Once the
    budget is spent, further samples are not kept.
    """

    def __init__(self, budget_mb: int) -> None:
        self.budget = budget_mb * 2**20
        self.used = 0
        self.samples: dict[int, dict] = {}

    def get(self, index: int) -> dict | None:
        stored = self.samples.get(index)
        return None if stored is None else dict(stored)

    def put(self, index: int, sample: dict) -> None:
        if index in self.samples or self.used >= self.budget:
            return
        stored = {key: _compact(value) if key in LABEL_KEYS else value for key, value in sample.items()}
        size = sum(value.nbytes for value in stored.values() if isinstance(value, np.ndarray))
        if self.used + size > self.budget:
            return
        for value in stored.values():
            if isinstance(value, np.ndarray):
                value.flags.writeable = False
        self.samples[index] = stored
        self.used += size


def _compact(label: np.ndarray) -> np.ndarray:
    """A copy of an integer label map in uint8, else int32, when its values fit."""
    low, high = (int(label.min()), int(label.max())) if label.size else (0, 0)
    for dtype in (np.uint8, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return label.astype(dtype)
    return label.copy()


class TrainingSamples(Dataset):
    """Augmented tensors of a dataset, indexed by ``(index, position)`` pairs from ``StepSampler``.

    ``weights``: the images' sampling weights (``StepSampler``'s, repeat factors), which also draw
    the source images of copy-paste; None: sources drawn uniformly.

    A sample that cannot be read raises ``BadSampleError`` naming the file, or, with
    ``data.skip_bad``, is replaced (with a warning) by the next readable sample of the dataset.
    """

    MAX_REPLACEMENTS = 16

    def __init__(self, dataset: Dataset, config: DataConfig, seed: int, cache_mb: int | None = None,
                 weights: torch.Tensor | None = None) -> None:
        self.dataset = dataset
        self.cumulative_weights = None if weights is None else np.cumsum(weights.double().numpy())
        self.config = config
        self.seed = seed
        self.augment = TrainAugmentation(config.crop_size, config.scale_min, config.scale_max, config.flip, config.mean,
                                         config.color_jitter)
        self.cache = SampleCache(config.cache_mb if cache_mb is None else cache_mb)

    def __len__(self) -> int:
        return len(self.dataset)

    def _read(self, index: int) -> dict:
        for attempt in range(self.MAX_REPLACEMENTS):
            candidate = (index + attempt) % len(self.dataset)
            cached = self.cache.get(candidate)
            if cached is not None:
                return cached
            try:
                sample = self.dataset[candidate]
                self.cache.put(candidate, sample)
                return sample
            except (ValueError, OSError) as error:
                if not self.config.skip_bad:
                    raise BadSampleError(f"{error} (set data.skip_bad=true to skip unreadable samples)") from error
                warnings.warn(f"skipping an unreadable training sample: {error}", stacklevel=2)
        raise BadSampleError(f"{self.MAX_REPLACEMENTS} training samples in a row from index {index} are unreadable; "
                             "check the dataset with `bridgeseg data check`")

    def _paste_source(self, rng: np.random.Generator) -> int:
        """The index of the image whose objects are pasted: uniform, or in proportion to the weights."""
        if self.cumulative_weights is None:
            return int(rng.integers(len(self.dataset)))
        drawn = rng.random() * self.cumulative_weights[-1]
        return min(int(np.searchsorted(self.cumulative_weights, drawn, side="right")), len(self.dataset) - 1)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, position = key
        rng = np.random.default_rng([self.seed, position])
        sample = self.augment(self._read(index), rng)
        if self.config.copy_paste > 0 and rng.random() < self.config.copy_paste:
            source = self.augment(self._read(self._paste_source(rng)), rng)
            sample = paste_objects(sample, source, rng)
        return to_tensors(sample)


class EvaluationSamples(Dataset):
    """Whole images, un-augmented and not normalised (the ``Predictor`` normalises them as it does any
    image), optionally only the first ``limit``: ``image`` (H, W, 3) uint8, label maps (H, W) int64."""

    def __init__(self, dataset: Dataset, limit: int = 0) -> None:
        self.dataset = dataset
        self.length = min(limit, len(dataset)) if limit > 0 else len(dataset)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        out = {key: torch.from_numpy(np.array(sample[key], dtype=np.int64)) for key in LABEL_KEYS if key in sample}
        return {"image": torch.from_numpy(np.array(sample["image"], dtype=np.uint8)), "name": sample["name"], **out}


class StepSampler(Sampler):
    """Yields the batch of step ``k`` as ``[(index, position), ...]`` for ``k = start_step ..``.

    Args:
        size: dataset length.
        batch_size: the global batch size ``B``.
        seed: fixes epoch permutations and augmentation.
        start_step, total_steps: the steps to yield.
        rank, world_size: this process's share of each global batch (positions ``rank::world_size``).
        weights: None (each epoch a permutation of the dataset), or (size,) sampling weights: each
            epoch draws ``size`` images with replacement in proportion to them (repeat factor
            sampling, ``data.balance``).
    """

    def __init__(self, size: int, batch_size: int, seed: int, start_step: int, total_steps: int,
                 rank: int = 0, world_size: int = 1, weights: torch.Tensor | None = None) -> None:
        if size == 0:
            raise ValueError("the training split is empty")
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.start_step, self.total_steps = start_step, total_steps
        self.rank, self.world_size = rank, world_size
        self.weights = weights
        self._epoch, self._permutation = -1, None

    def _index(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.size, generator=generator) if self.weights is None else \
                torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
            self._epoch, self._permutation = epoch, order
        return int(self._permutation[position % self.size])

    def batch(self, step: int) -> list[tuple[int, int]]:
        first = step * self.batch_size
        positions = range(first + self.rank, first + self.batch_size, self.world_size)
        return [(self._index(position), position) for position in positions]

    def __iter__(self):
        for step in range(self.start_step, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)


def training_loader(config: Config, dataset: Dataset, start_step: int, rank: int = 0, world_size: int = 1,
                    weights: torch.Tensor | None = None, device_type: str = "cpu") -> DataLoader:
    """Batches of augmented crops for steps ``start_step .. train.iterations - 1``; ``weights``: the
    images' sampling weights (``StepSampler``), None for plain epochs; ``device_type``: where the
    network runs (``loader_workers``). A batch: ``image`` (B, 3, H, W) uint8 (``augment.normalize``
    makes it input), ``semantic`` and ``instance`` (B, H, W) int64."""
    sampler = StepSampler(len(dataset), config.train.batch_size, config.train.seed, start_step,
                          config.train.iterations, rank, world_size, weights)
    workers = loader_workers(config.data.workers, device_type)
    samples = TrainingSamples(dataset, config.data, config.train.seed, cache_mb=config.data.cache_mb // max(1, workers),
                              weights=weights)
    # a private generator: creating the loader must not draw from the global RNG (exact resume)
    return DataLoader(samples, batch_sampler=sampler,
                      num_workers=workers, persistent_workers=False, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(0))


def evaluation_loader(config: DataConfig, dataset: Dataset, limit: int = 0, workers: int | None = None,
                      shard: tuple[int, int] = (0, 1), device_type: str = "cpu") -> DataLoader:
    """One whole image per batch (images of a split may differ in size).

    ``shard = (rank, world_size)`` keeps every ``world_size``-th image from ``rank`` (distributed
    evaluation; the evaluators' statistics are reduced afterwards).
    """
    workers = loader_workers(config.workers, device_type) if workers is None else workers
    samples = EvaluationSamples(dataset, limit)
    rank, world_size = shard
    if world_size > 1:
        samples = Subset(samples, list(range(rank, len(samples), world_size)))
    return DataLoader(samples, batch_size=1, num_workers=workers, pin_memory=torch.cuda.is_available())

"""Helpers shared by the benchmark scripts: timing and peak memory of a callable, side by side."""

from __future__ import annotations

import gc
import resource
import statistics
import time

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def interleaved_medians(steps: dict, device: torch.device, warmup: int, rounds: int) -> dict[str, float]:
    """Median step time of each named callable, measured in alternating rounds so that both
    see the same machine state (turbo, other load) -- the fair way to compute a ratio."""
    for step in steps.values():
        time_steps(step, device, warmup, 0)
    samples = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            samples[name] += time_steps(step, device, 0, 1)
    return {name: statistics.median(values) for name, values in samples.items()}


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def peak_memory_mib(function, device: torch.device) -> float:
    """Peak memory (MiB) that ``function()`` adds: CUDA ``max_memory_allocated`` above what was
    allocated before, or on the CPU the growth of the process's peak resident set size (so run it
    in a fresh process: on Linux a child starts with its parent's peak)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        function()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    function()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # Linux: KiB

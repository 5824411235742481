"""Check a dataset root before a long run: layout, files, sizes, label values, instances.

``check_dataset("voc", "/data/VOCdevkit/VOC2012")`` reads every image and label file of the
splits (``train`` and ``val`` by default) and collects every problem with its file instead of
stopping at the first; ``format_report`` prints the result::

    report = check_dataset("cityscapes", "/data/cityscapes", num_workers=8)
    print(format_report(report))
    if not report.ok: ...

Dataset names are those of ``bridgeseg.data.registry`` (``voc_aug`` needs ``sbd_root`` unless
``prepare_voc_aug`` has run); each format's default splits are checked unless ``split`` is given.

Problems (``kind``; errors make ``CheckReport.ok`` False, warnings do not):

- ``layout`` (error): a folder or split list is missing or empty; the dataset cannot be opened.
- ``missing_image``, ``corrupt_image`` (errors): an id of a split has no image, or it cannot be decoded.
- ``missing_label``, ``unreadable_label`` (errors): no label file, or one that cannot be decoded
  (a corrupt PNG/MAT, an RGB colour that is no class colour).
- ``size_mismatch`` (error): a label map is not the size of its image.
- ``label_value`` (error): a label value is no class (not in 0..C-1 and not 255 = void).
- ``instance_background`` (error): pixels of an instance have the background class (0).
- ``instance_multiclass`` (error): an instance spans more than one foreground class.
- ``uncovered_foreground`` (warning): pixels of a class that has instances lie outside every
  instance (instance id 0). The instance targets simply leave such pixels out, so this is no
  error; real annotations have them (e.g. SBD objects labelled in ``cls`` but not in ``inst``),
  and many of them hint at misaligned files.
- ``duplicate_id`` (warning): an id is listed twice in a split.

Void pixels (255) of either map are left out of the instance checks.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import label_size_problem, label_value_problem
from .io import VOID, read_image
from .registry import dataset_class, open_dataset

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One problem: its kind, the file it concerns, a message that says what to fix."""

    kind: str
    file: str
    message: str
    severity: str = ERROR


@dataclass
class SplitSummary:
    """What a split holds.

    Attributes:
        pixels: (C,) int64 pixels of each class over the images whose labels could be read.
        images: (C,) int64 number of images in which each class occurs.
        void_pixels: pixels labelled 255.
    """

    name: str
    num_images: int
    pixels: np.ndarray
    images: np.ndarray
    void_pixels: int = 0
    instances: int = 0


@dataclass
class CheckReport:
    """The result of ``check_dataset``."""

    dataset: str
    root: str
    class_names: tuple[str, ...] = ()
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Number of problems of each kind."""
        return dict(Counter(p.kind for p in self.problems))


# ---------------------------------------------------------------------------------------------
# Checking one image


@dataclass
class _ItemResult:
    problems: list[Problem]
    pixels: np.ndarray | None = None  # (C + 1,) class pixels, void last
    instances: int = 0


def _label_read_problem(error: Exception, path: Path) -> Problem:
    from .cityscapes import LabelValueError

    if isinstance(error, FileNotFoundError):
        return Problem("missing_label", str(path), str(error))
    if isinstance(error, LabelValueError):
        return Problem("label_value", str(path), str(error))
    return Problem("unreadable_label", str(path), str(error))


def _read(reader, name: str, path: Path, problems: list[Problem]) -> np.ndarray | None:
    try:
        return reader(name)
    except (FileNotFoundError, ValueError, OSError) as error:
        problems.append(_label_read_problem(error, path))
        return None


def _size_problem(label: np.ndarray, size: tuple[int, int], path: Path) -> Problem | None:
    problem = label_size_problem(label, size)
    return Problem("size_mismatch", str(path), f"label {path} {problem}") if problem else None


def _value_problem(semantic: np.ndarray, num_classes: int, path: Path) -> Problem | None:
    problem = label_value_problem(semantic, num_classes)
    return Problem("label_value", str(path), f"label {path} {problem}") if problem else None


def instance_problems(semantic: np.ndarray, instance: np.ndarray, num_classes: int,
                      thing_classes: Sequence[int], path: Path | str) -> list[Problem]:
    """The instance checks of one image.

    Args:
        semantic: (H, W) classes, 255 = void.
        instance: (H, W) instance ids, 0 = none, 255 = void.
        num_classes: C.
        thing_classes: the classes that have instances (for ``uncovered_foreground``).
        path: the instance file, named in the problems.
    """
    problems: list[Problem] = []
    valid = (instance != 0) & (instance != VOID) & (semantic != VOID)
    ids, inverse = np.unique(instance[valid], return_inverse=True)
    if len(ids):
        classes = np.clip(semantic[valid], 0, num_classes)  # out-of-range classes land in column C
        table = np.bincount(inverse.reshape(-1) * (num_classes + 1) + classes,
                            minlength=len(ids) * (num_classes + 1)).reshape(len(ids), num_classes + 1)
        on_background = np.flatnonzero(table[:, 0])
        if len(on_background):
            detail = ", ".join(f"{int(ids[k])} ({int(table[k, 0])} px)" for k in on_background[:8])
            problems.append(Problem("instance_background", str(path),
                                    f"instances of {path} have pixels of class 0 (background): {detail}; every "
                                    "instance pixel must carry its object's class"))
        spans = (table[:, 1:num_classes] > 0).sum(axis=1)
        for k in np.flatnonzero(spans > 1)[:8]:
            found = [int(c) + 1 for c in np.flatnonzero(table[k, 1:num_classes])]
            problems.append(Problem("instance_multiclass", str(path),
                                    f"instance {int(ids[k])} of {path} spans classes {found}; an instance has "
                                    "one class"))
    uncovered = np.isin(semantic, np.asarray(thing_classes, dtype=np.int64)) & (instance == 0)
    if uncovered.any():
        problems.append(Problem("uncovered_foreground", str(path),
                                f"{int(uncovered.sum())} pixels of {path} have a class with instances but lie outside "
                                "every instance", WARNING))
    return problems


def check_item(source, name: str) -> _ItemResult:
    """Check the image and labels of one id of an opened dataset (``registry.open_dataset``)."""
    problems: list[Problem] = []
    size = None
    image_path = source.image_path(name)
    try:
        size = read_image(image_path).shape[:2]
    except FileNotFoundError as error:
        problems.append(Problem("missing_image", str(image_path), str(error)))
    except (ValueError, OSError) as error:
        problems.append(Problem("corrupt_image", str(image_path), str(error)))
    result = _ItemResult(problems)
    semantic_path = source.semantic_path(name)
    semantic = _read(source.read_semantic, name, semantic_path, problems)
    if semantic is not None:
        mismatch = _size_problem(semantic, size, semantic_path) if size is not None else None
        if mismatch:
            problems.append(mismatch)
        value = _value_problem(semantic, source.num_classes, semantic_path)
        if value:
            problems.append(value)
        classes = np.where((semantic >= 0) & (semantic < source.num_classes), semantic, source.num_classes)
        pixels = np.bincount(classes.reshape(-1), minlength=source.num_classes + 1)
        pixels[source.num_classes] = int((semantic == VOID).sum())
        result.pixels = pixels
    if source.with_instances:
        instance_path = source.instance_path(name)
        instance = _read(source.read_instance, name, instance_path, problems)
        if instance is not None:
            reference = size if size is not None else (semantic.shape if semantic is not None else None)
            mismatch = _size_problem(instance, reference, instance_path) if reference is not None else None
            if mismatch:
                problems.append(mismatch)
            elif semantic is not None and semantic.shape == instance.shape:
                problems.extend(instance_problems(semantic, instance, source.num_classes, source.thing_classes,
                                                  instance_path))
            result.instances = len(np.setdiff1d(np.unique(instance), [0, VOID]))
    return result


# ---------------------------------------------------------------------------------------------
# Checking a dataset

_WORKER_SOURCE = None


def _init_worker(source) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source


def _check_in_worker(name: str) -> _ItemResult:
    return check_item(_WORKER_SOURCE, name)


def _results(source, names: list[str], num_workers: int, progress: bool, description: str):
    from tqdm import tqdm

    bar = tqdm(total=len(names), desc=description, unit="img", disable=not progress)
    try:
        if num_workers > 0:
            with ProcessPoolExecutor(num_workers, initializer=_init_worker, initargs=(source,)) as pool:
                chunk = max(1, min(32, len(names) // (4 * num_workers)))
                for result in pool.map(_check_in_worker, names, chunksize=chunk):
                    bar.update()
                    yield result
        else:
            for name in names:
                result = check_item(source, name)
                bar.update()
                yield result
    finally:
        bar.close()


def _check_split(source, split: str, num_workers: int, progress: bool, problems: list[Problem]) -> SplitSummary:
    count = source.num_classes
    pixels = np.zeros(count, dtype=np.int64)
    images = np.zeros(count, dtype=np.int64)
    void, instances = 0, 0
    for name, times in Counter(source.ids).items():
        if times > 1:
            message = f"id {name} is listed {times} times in split {split!r}"
            problems.append(Problem("duplicate_id", name, message, WARNING))
    names = list(dict.fromkeys(source.ids))
    for result in _results(source, names, num_workers, progress, f"checking {split}"):
        problems.extend(result.problems)
        instances += result.instances
        if result.pixels is not None:
            pixels += result.pixels[:count]
            images += result.pixels[:count] > 0
            void += int(result.pixels[count])
    return SplitSummary(split, len(source.ids), pixels, images, void, instances)


def check_dataset(dataset_name: str, root: str | Path, split: str | Sequence[str] | None = None,
                  sbd_root: str | Path | None = None, num_workers: int = 0, progress: bool = True) -> CheckReport:
    """Check every image and label file of a dataset root; never stops at the first problem.

    Args:
        dataset_name: a name of ``bridgeseg.data.registry.DATASETS``.
        root: the dataset root (as for the dataset classes).
        split: a split, a list of splits, or ``None`` for the format's ``default_splits``
            (``train``/``val``; ``train_aug``/``val`` for ``voc_aug``).
        sbd_root: SBD's ``dataset/`` folder, for ``voc_aug``.
        num_workers: processes reading files in parallel (0 = in this process).
        progress: show a tqdm progress bar per split.

    Returns:
        A ``CheckReport``: images per split, class frequencies, and every problem with its file.
    """
    default_splits = dataset_class(dataset_name).default_splits
    splits = default_splits if split is None else ((split,) if isinstance(split, str) else tuple(split))
    report = CheckReport(dataset_name, str(root))
    for name in splits:
        try:
            source = open_dataset(dataset_name, root, name, sbd_root=sbd_root)
        except (FileNotFoundError, ValueError, OSError) as error:
            report.problems.append(Problem("layout", str(root), f"split {name!r}: {error}"))
            continue
        report.class_names = tuple(source.class_names)
        report.splits.append(_check_split(source, name, num_workers, progress, report.problems))
    return report


# ---------------------------------------------------------------------------------------------
# Printing


def _class_table(report: CheckReport, summary: SplitSummary) -> list[str]:
    total = int(summary.pixels.sum()) + summary.void_pixels
    width = max([len(n) for n in report.class_names] + [5])
    lines = [f"  {'class':<{width}}  {'pixels':>14}  {'share':>7}  {'images':>7}"]
    for index, name in enumerate(report.class_names):
        share = 100.0 * summary.pixels[index] / total if total else 0.0
        pixels, images = int(summary.pixels[index]), int(summary.images[index])
        lines.append(f"  {name:<{width}}  {pixels:>14,}  {share:>6.2f}%  {images:>7}")
    share = 100.0 * summary.void_pixels / total if total else 0.0
    lines.append(f"  {'(void)':<{width}}  {summary.void_pixels:>14,}  {share:>6.2f}%")
    return lines


def format_report(report: CheckReport, max_problems: int = 20, classes: bool = True) -> str:
    """A readable report: images per split, class-frequency tables, problem counts and the first problems."""
    lines = [f"Dataset check: {report.dataset} at {report.root}"]
    for summary in report.splits:
        extra = f", {summary.instances} instances" if summary.instances else ""
        lines.append(f"split {summary.name}: {summary.num_images} images{extra}")
    if classes:
        for summary in report.splits:
            lines.append(f"class frequencies of split {summary.name}:")
            lines.extend(_class_table(report, summary))
    errors, warnings = report.errors, report.warnings
    lines.append(f"problems: {len(errors)} errors, {len(warnings)} warnings")
    for kind, count in sorted(report.counts().items()):
        lines.append(f"  {kind}: {count}")
    shown = errors[:max_problems] + warnings[:max(0, max_problems - len(errors))]
    for problem in shown:
        lines.append(f"  [{problem.severity} {problem.kind}] {problem.file}: {problem.message}")
    if len(report.problems) > len(shown):
        lines.append(f"  ... and {len(report.problems) - len(shown)} more")
    lines.append("result: OK" if report.ok else "result: FAILED (fix the errors above before training)")
    return "\n".join(lines)

"""The faults a hostile user found (issue 14), through the command line: output and disk errors
(case 2), resuming with a changed config (3), checks that came too late or said the wrong thing
(4), checkpoint file modes (5). Case 1, image kinds, is tests/test_image_kinds.py."""

from __future__ import annotations

import builtins
import errno
import gc
import io
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch

from bridgeseg.checkpoint import load_checkpoint, save_checkpoint
from bridgeseg.cli import main
from bridgeseg.config import load_config, resolve_config_path
from test_cli import TINY


def run(*args) -> int:
    return main([str(arg) for arg in args])


def error_line(err: str) -> str:
    """The one ``bridgeseg CMD: error: ...`` line of stderr (tqdm bars share the stream)."""
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


ONE_VIEW = ["eval.scales=[1.0]", "eval.flip=false"]  # the demo's 6 test views take longer than training here


def train_args(root, out, *settings):
    return ["train", "demo", "--data-root", root, "--out", out, "--set", *TINY, *ONE_VIEW, *settings]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, synthetic_root):
    """A joint run of 2 steps (checkpoints at both); copy it before changing it."""
    out = tmp_path_factory.mktemp("faults") / "run"
    assert run(*train_args(synthetic_root, out, "model.arch=joint")) == 0
    return out


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def dataset_with_classes(synthetic_root, folder, names):
    """A copy of the synthetic dataset whose classes.txt gives other class names."""
    root = Path(shutil.copytree(synthetic_root, folder))
    (root / "classes.txt").write_text("".join(f"{name}\n" for name in names))
    return root


# ----------------------------------------------------------------------------------------------
# 2. Output and disk errors
# ----------------------------------------------------------------------------------------------

def test_every_output_location_is_checked_before_the_work(tmp_path, synthetic_root, trained_run, capsys):
    a_file, folder = tmp_path / "a_file", tmp_path / "folder"
    a_file.write_text("not a folder")
    folder.mkdir()
    data = ["--data-root", synthetic_root, "--set", "data.workers=0", *ONE_VIEW]
    checkpoint = trained_run / "final.pt"
    image = sorted((synthetic_root / "JPEGImages").glob("val_*.jpg"))[0]
    gt = synthetic_root / "SegmentationClass"
    cases = [
        (train_args(synthetic_root, a_file), f"--out {a_file} is a file, not a folder"),
        (train_args(synthetic_root, a_file / "run"), f"--out {a_file / 'run'} lies under {a_file}, which is a file"),
        (["evaluate", "demo", *data, "--checkpoint", checkpoint, "--json", a_file / "m.json"],
         f"--json {a_file / 'm.json'} lies under {a_file}, which is a file"),
        (["evaluate", "demo", *data, "--checkpoint", checkpoint, "--json", folder], f"--json {folder} is a folder"),
        (["evaluate", "demo", *data, "--checkpoint", checkpoint, "--report", a_file], f"--report {a_file} is a file"),
        (["evaluate", "demo", *data, "--checkpoint", checkpoint, "--report", a_file / "report"], "lies under"),
        (["predict", "--checkpoint", checkpoint, image, "--out", a_file / "p"], "lies under"),
        (["predict-dataset", "demo", *data, "--checkpoint", checkpoint, "--out", a_file, "--format", "voc"],
         "is a file, not a folder"),
        (["export", "--checkpoint", checkpoint, "--onnx", a_file / "model.onnx"], "lies under"),
        (["score", "semantic", "--gt", gt, "--pred", gt, "--json", folder], "is a folder"),
    ]
    for argv, message in cases:
        assert run(*argv) == 2, argv
        captured = capsys.readouterr()
        assert message in error_line(captured.err), argv
        assert "mean IoU" not in captured.out and "training:" not in captured.err  # refused before the work


@pytest.fixture
def read_only(monkeypatch):
    """``make(folder)``: nothing can be created in ``folder`` any more. With chmod when not root;
    root ignores permissions, so there the calls that create files and folders in it fail as they
    would on a read-only folder."""
    made = []

    def make(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            folder.chmod(0o555)
            made.append(folder)
            return folder

        def refuse_inside(path) -> None:
            if isinstance(path, (str, os.PathLike)) and Path(os.path.abspath(path)).is_relative_to(folder.resolve()) \
                    and Path(os.path.abspath(path)) != folder.resolve():
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

        real_open, real_os_open, real_mkdir = builtins.open, os.open, os.mkdir

        def fake_open(file, mode="r", *args, **kwargs):
            if any(letter in mode for letter in "wax+"):
                refuse_inside(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse_inside(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            refuse_inside(path)
            return real_mkdir(path, *args, **kwargs)

        for module, name, fake in ((builtins, "open", fake_open), (io, "open", fake_open), (os, "open", fake_os_open),
                                   (os, "mkdir", fake_mkdir)):
            monkeypatch.setattr(module, name, fake)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


def test_a_read_only_output_folder_is_refused_before_the_work(tmp_path, synthetic_root, trained_run, read_only,
                                                                capsys):
    locked = read_only(tmp_path / "locked")
    assert run(*train_args(synthetic_root, locked / "run")) == 2
    assert f"--out {locked / 'run'} cannot be written: no file can be created in {locked}" in \
        error_line(capsys.readouterr().err)
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", trained_run / "final.pt",
               "--report", locked / "report", "--set", "data.workers=0", *ONE_VIEW) == 2
    captured = capsys.readouterr()
    assert f"--report {locked / 'report'} cannot be written" in error_line(captured.err)
    assert "mean IoU" not in captured.out  # before the evaluation, not after it


def test_a_full_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, synthetic_root, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def full_at_the_third(obj, file, *args, **kwargs):
        saves.append(file)
        if len(saves) == 3:
            file.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_the_third)
    assert run(*train_args(synthetic_root, out, "model.arch=semantic", "train.iterations=3")) == 2
    line = error_line(capsys.readouterr().err)
    assert f"could not write {out / 'last.pt'} (No space left on device); the previous last.pt is kept" in line
    assert f"Training stopped at step 3; {out / 'last.pt'} holds step 2" in line
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert not list(out.glob(".last.pt.*")) and not (out / "final.pt").exists()
    monkeypatch.undo()
    assert run(*train_args(synthetic_root, out, "model.arch=semantic", "train.iterations=3")) == 0
    assert "resuming from" in capsys.readouterr().out and load_checkpoint(out / "final.pt")["step"] == 3


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full (Linux)")
def test_a_full_disk_at_json_still_prints_the_metrics(tmp_path, synthetic_root, trained_run, monkeypatch, capsys):
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", trained_run / "final.pt",
               "--json", "/dev/full", "--set", "data.workers=0", *ONE_VIEW) == 2
    captured = capsys.readouterr()
    assert "mean IoU" in captured.out
    assert "could not write /dev/full (No space left on device); the metrics are printed above" in \
        error_line(captured.err)
    previous = tmp_path / "scores.json"
    previous.write_text("the previous scores\n")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    gt = synthetic_root / "SegmentationClass"
    assert run("score", "semantic", "--gt", gt, "--pred", gt, "--num-classes", 6, "--json", previous) == 2
    assert "the previous scores.json is kept; the metrics are printed above" in error_line(capsys.readouterr().err)
    assert previous.read_text() == "the previous scores\n" and not list(tmp_path.glob(".scores.json.*"))


def test_a_file_that_cannot_be_written_at_the_end_loses_no_metrics(tmp_path, synthetic_root, trained_run, capsys):
    out = tmp_path / "run"
    (out / "class_scores.png").mkdir(parents=True)  # in the way of the last file training writes
    assert run(*train_args(synthetic_root, out, "model.arch=semantic")) == 2
    captured = capsys.readouterr()
    assert "mean IoU" in captured.out
    assert f"could not write {out / 'class_scores.png'}" in error_line(captured.err)
    assert "the metrics are printed above" in captured.err
    assert (out / "final.pt").is_file() and (out / "curves.png").is_file()
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["final"]

    report = tmp_path / "report"
    (report / "class_scores.png").mkdir(parents=True)
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", trained_run / "final.pt",
               "--report", report, "--set", "data.workers=0", *ONE_VIEW) == 2
    captured = capsys.readouterr()
    assert "mean IoU" in captured.out
    assert f"could not write the report in {report} ({report / 'class_scores.png'}" in error_line(captured.err)


def test_predict_says_which_image_it_could_not_write_and_keeps_the_others(tmp_path, synthetic_root, trained_run,
                                                                           capsys):
    first, second = sorted((synthetic_root / "JPEGImages").glob("val_*.jpg"))[:2]
    out = tmp_path / "out"
    (out / f"{second.stem}_overlay.png").mkdir(parents=True)
    assert run("predict", "--checkpoint", trained_run / "final.pt", first, second, "--out", out,
               "--device", "cpu") == 2
    line = error_line(capsys.readouterr().err)
    assert f"could not write the prediction files of {second} into {out}" in line
    assert "the files of 1 earlier image are kept" in line
    assert (out / f"{first.stem}_overlay.png").is_file() and (out / f"{first.stem}.json").is_file()


# ----------------------------------------------------------------------------------------------
# 3. Resuming with a changed config
# ----------------------------------------------------------------------------------------------

def test_resuming_with_another_architecture_is_refused_before_anything_is_written(synthetic_root, run_copy, capsys):
    before = {name: (run_copy / name).read_bytes() for name in ("config.yaml", "last.pt", "metrics.jsonl")}
    assert run(*train_args(synthetic_root, run_copy, "model.arch=joint", "model.depth=34",
                           "data.crop_size=40")) == 2
    line = error_line(capsys.readouterr().err)
    assert f"cannot resume {run_copy / 'last.pt'} (step 2)" in line
    assert "model.depth is 34 but 18 in the checkpoint, data.crop_size is 40 but 48 in the checkpoint" in line
    assert "--out OTHER" in line and "--no-resume" in line
    assert {name: (run_copy / name).read_bytes() for name in before} == before  # the run's record is intact


def test_resuming_on_other_classes_is_refused(tmp_path, synthetic_root, run_copy, capsys):
    root = dataset_with_classes(synthetic_root, tmp_path / "data", ["bg", "disk", "box", "wedge", "plus", "star"])
    config = (run_copy / "config.yaml").read_bytes()
    assert run(*train_args(root, run_copy, "model.arch=joint")) == 2
    line = error_line(capsys.readouterr().err)
    assert "trained on the classes ['background', 'circle'," in line and "now has ['bg', 'disk'," in line
    assert "--no-resume" in line and (run_copy / "config.yaml").read_bytes() == config


def test_a_longer_schedule_and_a_new_learning_rate_are_taken_and_recorded(synthetic_root, run_copy, capsys):
    assert run(*train_args(synthetic_root, run_copy, "model.arch=joint", "train.iterations=3", "train.lr=0.0001",
                           "eval.flip=true")) == 0
    printed = capsys.readouterr().out
    demo = load_config(resolve_config_path("demo")).train
    assert ("resuming from" in printed and "at step 2 with changed settings: train.iterations 2 -> 3, train.lr "
            f"{demo.lr} -> 0.0001, eval.flip False -> True") in printed
    records = [json.loads(line) for line in (run_copy / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 2, "config_changes": {"train.iterations": [2, 3], "train.lr": [demo.lr, 0.0001],
                                          "eval.flip": [False, True]}} in records
    step_3 = next(record for record in records if record.get("step") == 3 and "lr" in record)
    # the new rate, not the checkpoint's: poly at progress 2/3, and step 3 of the demo's warm-up
    assert step_3["lr"] == pytest.approx(0.0001 * (1 / 3) ** demo.poly_power * 3 / demo.lr_warmup_iterations,
                                         rel=1e-3)
    assert "iterations: 3" in (run_copy / "config.yaml").read_text()


# ----------------------------------------------------------------------------------------------
# 4. Checks that came too late or said the wrong thing
# ----------------------------------------------------------------------------------------------

def test_a_bad_set_value_is_blamed_on_the_set_argument_before_any_work(tmp_path, synthetic_root, capsys):
    for setting, message in [("instance.nms_threshold=1.0", "instance.nms_threshold = 1.0 is out of range: it "
                              "must be < 1.0 (from --set instance.nms_threshold=1.0)"),
                             ("train.lr=nan", "train.lr = nan is not valid: it must be a finite number (from --set "
                              "train.lr=nan)")]:
        assert run(*train_args(synthetic_root, tmp_path / "run", setting)) == 2
        line = error_line(capsys.readouterr().err)
        assert message in line and "demo.yaml" not in line
        assert not (tmp_path / "run").exists()
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  depth: 19\n")
    assert run("train", config, "--data-root", synthetic_root, "--out", tmp_path / "run", "--set", "train.lr=0.1") == 2
    assert f"model.depth = 19 is not valid; choose one of [18, 34, 50, 101, 152] (in {config})" in \
        error_line(capsys.readouterr().err)


def test_an_empty_config_file_is_refused(tmp_path, synthetic_root, capsys):
    for text in ("", "# nothing but a comment\n"):
        config = tmp_path / "empty.yaml"
        config.write_text(text)
        assert run("train", config, "--data-root", synthetic_root, "--out", tmp_path / "run") == 2
        line = error_line(capsys.readouterr().err)
        assert f"config file {config} is empty: it would mean every default (ResNet-101, model.init = imagenet" in line
        assert not (tmp_path / "run").exists()


def test_a_corrupt_sample_in_a_worker_is_one_line_and_step_0_claims_no_checkpoint(tmp_path, synthetic_root, capsys):
    root = Path(shutil.copytree(synthetic_root, tmp_path / "data"))
    for image in (root / "JPEGImages").glob("train_*.jpg"):
        image.write_bytes(image.read_bytes()[:100])
    out = tmp_path / "run"
    assert run(*train_args(root, out, "data.workers=1")) == 2  # a DataLoader worker process
    gc.collect()  # the failed loader's worker goes now (PyTorch waits 5 s for it), not in a later test
    err = capsys.readouterr().err
    line = error_line(err)
    assert "Original Traceback" not in err and "Caught BadSampleError" not in err
    assert f"image {root / 'JPEGImages'}/train_" in line and "is corrupt" in line and "data.skip_bad=true" in line
    assert "Training stopped at step 0, before its first checkpoint" in line and "holds step" not in line
    assert not (out / "last.pt").exists()


def test_a_file_of_random_bytes_is_not_called_a_pickle(tmp_path, synthetic_root, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(7, 256)) * 8)
    assert run("evaluate", "demo", "--data-root", synthetic_root, "--checkpoint", junk) == 2
    line = error_line(capsys.readouterr().err)
    assert f"{junk} is not a PyTorch checkpoint" in line and "unpickled" not in line


def test_evaluating_on_other_class_names_warns_with_both_lists(tmp_path, synthetic_root, trained_run):
    root = dataset_with_classes(synthetic_root, tmp_path / "data", ["bg", "disk", "box", "wedge", "plus", "star"])
    with pytest.warns(UserWarning, match=r"trained on the classes \['background', 'circle'.*has \['bg', 'disk'"):
        assert run("evaluate", "demo", "--data-root", root, "--checkpoint", trained_run / "final.pt",
                   "--set", "data.workers=0", *ONE_VIEW) == 0


# ----------------------------------------------------------------------------------------------
# 5. File modes
# ----------------------------------------------------------------------------------------------

def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_checkpoints_get_the_users_usual_file_mode(tmp_path, trained_run):
    umask = os.umask(0o022)
    os.umask(umask)
    for name in ("last.pt", "final.pt", "config.yaml"):
        assert file_mode(trained_run / name) == 0o666 & ~umask, name
    previous = os.umask(0o007)
    try:
        save_checkpoint({"model": {}}, tmp_path / "shared.pt")
        assert file_mode(tmp_path / "shared.pt") == 0o660
        (tmp_path / "shared.pt").chmod(0o640)  # a mode the user chose is kept on overwrite
        save_checkpoint({"model": {}}, tmp_path / "shared.pt")
        assert file_mode(tmp_path / "shared.pt") == 0o640
    finally:
        os.umask(previous)

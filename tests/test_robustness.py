"""Nothing is lost: exact resume after SIGKILL, bad data, NaN losses, unsafe checkpoints, AMP on CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

from bridgeseg.cli import main
from bridgeseg.data.io import read_image
from bridgeseg.checkpoint import load_checkpoint, save_checkpoint

TINY = ["model.depth=18", "model.output_stride=16", "model.kernel=3", "model.dilation=1", "model.init=random",
        "model.arch=semantic", "data.crop_size=40", "data.workers=0", "train.batch_size=2", "train.log_every=1",
        "train.threads=1", "train.eval_every=0", "loss.min_kept=64"]


def train_command(root, out, *extra):
    return [sys.executable, "-m", "bridgeseg", "train", "demo", "--data-root", str(root), "--out", str(out),
            "--set", *TINY, *extra]


def final_weights(out):
    return load_checkpoint(out / "final.pt")["model"]


def test_killed_run_resumes_to_identical_weights(tmp_path, synthetic_root):
    settings = ["train.iterations=16", "train.checkpoint_every=1", "train.deterministic=true", "train.time_limit_minutes=0",
                "model.dropout=0.2", "model.dropout_blocks=1",  # dropout: the RNG state must resume too
                "train.weight_average=0.9"]  # and so must the average of the weights (what final.pt holds)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train_command(synthetic_root, tmp_path / "straight", *settings), check=True, env=env,
                   capture_output=True)

    interrupted = tmp_path / "killed"
    process = subprocess.Popen(train_command(synthetic_root, interrupted, *settings), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        last = interrupted / "last.pt"
        if last.is_file():
            try:
                step = load_checkpoint(last)["step"]
            except (ValueError, FileNotFoundError):
                step = 0
            if step >= 4:
                process.send_signal(signal.SIGKILL)
                process.wait()
                killed_at = step
                break
        time.sleep(0.02)
    assert killed_at is not None and killed_at < 16, "the run finished before it could be killed"
    assert not (interrupted / "final.pt").exists()
    resumed = subprocess.run(train_command(synthetic_root, interrupted, *settings), env=env, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout
    straight, again = final_weights(tmp_path / "straight"), final_weights(interrupted)
    for name in straight:
        assert torch.equal(straight[name], again[name]), name
    last_straight, last_again = (load_checkpoint(out / "last.pt") for out in (tmp_path / "straight", interrupted))
    for name in last_straight["model"]:
        assert torch.equal(last_straight["model"][name], last_again["model"][name]), name
    steps = [json.loads(line)["step"] for line in (interrupted / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 17))  # the log has each step once


def test_corrupt_training_image_stops_cleanly_or_is_skipped(tmp_path, synthetic_root, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    victim = sorted((root / "JPEGImages").glob("train_*.jpg"))[3]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    assert main(["train", "demo", "--data-root", str(root), "--out", str(tmp_path / "a"), "--set", *TINY,
                 "train.iterations=8"]) == 2
    error = capsys.readouterr().err
    assert victim.name in error and "data.skip_bad" in error and "resume" in error
    with pytest.warns(UserWarning, match=victim.name):
        assert main(["train", "demo", "--data-root", str(root), "--out", str(tmp_path / "b"), "--set", *TINY,
                     "train.iterations=8", "data.skip_bad=true"]) == 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, synthetic_root, capsys):
    out = tmp_path / "run"
    assert main(["train", "demo", "--data-root", str(synthetic_root), "--out", str(out), "--set", *TINY,
                 "train.iterations=20", "train.checkpoint_every=1", "train.optimizer=sgd", "train.lr=1e30"]) == 2
    error = capsys.readouterr().err
    assert "the loss became" in error and "last.pt" in error
    state = load_checkpoint(out / "last.pt")
    failed_at = int(error.split(" at step ")[1].split()[0])
    assert state["step"] == failed_at  # the checkpoint of the last step whose loss was finite
    assert not (out / "final.pt").exists()


class Payload:
    """Stands for any object whose unpickling would run code."""


def test_unsafe_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to load"):
        load_checkpoint(path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    save_checkpoint({"model": {"w": torch.ones(2)}}, tmp_path / "good.pt")
    assert torch.equal(load_checkpoint(tmp_path / "good.pt")["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".good.pt.*"))  # no temporary file left behind


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    Image.new("RGB", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 64 = 4096 > 2 x limit
    with pytest.raises(ValueError, match="big.png .*decompression-bomb"):
        read_image(tmp_path / "big.png")


def test_bf16_training_step_on_cpu(tmp_path, synthetic_root):
    out = tmp_path / "run"
    assert main(["train", "demo", "--data-root", str(synthetic_root), "--out", str(out), "--set", *TINY,
                 "train.iterations=2", "train.amp=bf16", "model.arch=joint", "loss.box_min_kept=16"]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 2 and all(map(lambda x: x == x and abs(x) < 1e4, losses))

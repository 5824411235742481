"""train.weight_average: the exponential moving average of the weights, against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bridgeseg.engine.weight_average import WeightAverage


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_average_follows_the_formula_with_its_warm_up():
    model = _model()
    first = {key: value.clone() for key, value in model.state_dict().items()}
    average = WeightAverage(model, decay=0.99)
    assert average.rate(1) == pytest.approx(2 / 11) and average.rate(10_000) == 0.99
    states = [first]
    for step in (1, 2):
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter))
            model[1].running_mean.add_(1.0)
            model[1].num_batches_tracked.add_(1)
        states.append({key: value.clone() for key, value in model.state_dict().items()})
        average.update(model, step)
    d1, d2 = 2 / 11, 3 / 12
    for key in ("0.weight", "1.bias", "1.running_mean"):
        expected = d2 * (d1 * first[key] + (1 - d1) * states[1][key]) + (1 - d2) * states[2][key]
        torch.testing.assert_close(average.state_dict()[key], expected)
    assert average.state_dict()["1.num_batches_tracked"] == 2  # counters are copied, not averaged


def test_swapped_in_gives_the_average_and_puts_the_weights_back():
    model = _model()
    average = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model[0].weight.add_(4.0)
    own = model[0].weight.clone()
    average.update(model, 100)  # rate 0.5: half way
    with average.swapped_in(model):
        torch.testing.assert_close(model[0].weight, own - 2.0)
    assert torch.equal(model[0].weight, own)


def test_a_stored_average_of_another_model_is_refused():
    average = WeightAverage(_model(), decay=0.9)
    with pytest.raises(ValueError, match="does not fit"):
        average.load_state_dict({"other.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        WeightAverage(_model(), decay=1.0)


def test_final_checkpoint_holds_the_average_and_last_holds_both(synthetic_root, tmp_path):
    from bridgeseg.checkpoint import load_checkpoint
    from bridgeseg.config import load_config, resolve_config_path
    from bridgeseg.engine.evaluate import evaluate_config
    from bridgeseg.engine.train import train

    settings = [f"data.root={synthetic_root}", "data.crop_size=40", "train.batch_size=2", "train.iterations=5",
                "train.lr=0.02", "train.time_limit_minutes=0", "train.checkpoint_every=0", "train.weight_average=0.9",
                "model.arch=semantic", "eval.max_images=2", "eval.scales=[1.0]", "eval.flip=false"]
    config = load_config(resolve_config_path("demo"), settings)
    result = train(config, tmp_path / "run", resume=False, progress=False)
    last, final = (load_checkpoint(tmp_path / "run" / name) for name in ("last.pt", "final.pt"))
    weight = next(key for key in last["model"] if key.endswith("conv1.weight"))
    assert torch.equal(final["model"][weight], last["weight_average"][weight])
    assert not torch.equal(final["model"][weight], last["model"][weight])
    assert result.steps == 5
    scored = {name: evaluate_config(config, tmp_path / "run" / name, device="cpu", progress=False)[0]["semantic"]
              for name in ("final.pt", "last.pt")}
    for metric in ("pixel_accuracy", "mean_iou"):  # the run scored the average (final.pt), not the last weights
        assert result.metrics["semantic"][metric] == pytest.approx(scored["final.pt"][metric])
    assert scored["last.pt"]["pixel_accuracy"] != pytest.approx(scored["final.pt"]["pixel_accuracy"])

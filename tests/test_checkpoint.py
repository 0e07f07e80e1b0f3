"""Checkpoint compatibility: names/shapes equal the official list; round trips; clear errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from engine.checkpoint import CheckpointError, load_checkpoint, randomize_weights
from engine.model import build_model

# A copy of shared/dknet/official-checkpoint-keys.txt: every tensor of the released checkpoint.
KEYS_FILE = Path(__file__).resolve().parent / "data" / "official-checkpoint-keys.txt"


def _official_keys() -> dict[str, tuple[tuple[int, ...], str]]:
    entries = {}
    for line in KEYS_FILE.read_text().splitlines():
        name, rest = line.split(" ", 1)
        shape, dtype = rest.rsplit(" ", 1)
        entries[name] = (tuple(int(x) for x in re.findall(r"\d+", shape)), dtype)
    return entries


def test_state_dict_matches_official_key_list(random_model):
    ours = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in random_model.state_dict().items()}
    assert ours == _official_keys()


def test_parameter_count_is_30_1_million(random_model):
    count = sum(v.numel() for v in random_model.state_dict().values() if v.is_floating_point())
    assert round(count / 1e6, 1) == 30.1


def _fresh(cpu):
    return build_model()


@pytest.mark.parametrize("wrap", ["model_dict", "bare", "module_prefix"])
def test_round_trip(tmp_path, cpu, random_model, wrap):
    state = random_model.state_dict()
    if wrap == "module_prefix":
        obj = {"model": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}, "epoch": 400}
    elif wrap == "model_dict":
        obj = {"model": state, "optimizer": {}}
    else:
        obj = state
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    model = _fresh(cpu)
    load_checkpoint(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_missing_and_unexpected_are_named(tmp_path, cpu, random_model):
    state = dict(random_model.state_dict())
    state.pop("linear.6.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_fresh(cpu), tmp_path / "bad.pth")
    message = str(info.value)
    assert "linear.6.weight" in message and "extra.weight" in message and "\n" not in message


def test_wrong_shape_is_named(tmp_path, cpu, random_model):
    state = dict(random_model.state_dict())
    state["offset_linear.weight"] = torch.zeros(4, 32)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"offset_linear.weight \(4, 32\) != \(3, 32\)"):
        load_checkpoint(_fresh(cpu), tmp_path / "shape.pth")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_corrupt_file(tmp_path, cpu, content):
    (tmp_path / "c.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(_fresh(cpu), tmp_path / "c.pth")


def test_missing_file(tmp_path, cpu):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(_fresh(cpu), tmp_path / "nope.pth")


def test_random_weights_are_seeded(cpu):
    a, b, c = _fresh(cpu), _fresh(cpu), _fresh(cpu)
    randomize_weights(a, 3)
    randomize_weights(b, 3)
    randomize_weights(c, 4)
    key = "unet.u.conv.2.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


def test_pickled_module_is_refused_in_one_plain_line(tmp_path, cpu):
    torch.save(build_model(), tmp_path / "module.pth")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_fresh(cpu), tmp_path / "module.pth")
    message = str(info.value)
    assert "pickled Python objects" in message and "state_dict()" in message
    assert "\n" not in message and "\x1b" not in message and message.endswith("'weights.pth')")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, cpu, random_model, value):
    state = dict(random_model.state_dict())
    state["offset_linear.weight"] = state["offset_linear.weight"].clone()
    state["offset_linear.weight"][0, 3] = value
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(CheckpointError, match=r"1 tensors hold NaN or infinity: offset_linear.weight"):
        load_checkpoint(_fresh(cpu), tmp_path / "nan.pth")


def test_other_dtypes_are_converted_with_a_warning(tmp_path, cpu, random_model):
    state = {k: (v.double() if k.endswith("weight") and v.is_floating_point() else v)
             for k, v in random_model.state_dict().items()}
    state["offset_linear.bias"] = state["offset_linear.bias"].round().int()
    torch.save(state, tmp_path / "f64.pth")
    model = _fresh(cpu)
    warnings = load_checkpoint(model, tmp_path / "f64.pth")
    assert len(warnings) == 1 and "another dtype" in warnings[0] and "float64 -> float32" in warnings[0]
    assert model.state_dict()["offset_linear.weight"].dtype == torch.float32
    assert load_checkpoint(_fresh(cpu), _save(tmp_path, random_model.state_dict())) == []


def _save(tmp_path: Path, state: dict) -> Path:
    torch.save(state, tmp_path / "ok.pth")
    return tmp_path / "ok.pth"

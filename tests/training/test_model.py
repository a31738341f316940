from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
from flwr.app import ArrayRecord
from opacus.validators import ModuleValidator
from typer.testing import CliRunner

from mshale_fl.cli.model_cmd import app as model_app
from mshale_fl.training.model import (
    FEATURE_DIM,
    ModelFileError,
    ModelMetadata,
    Mshale1,
    initial_model,
    load_model,
    load_parameters,
    model_digest,
    parameters_of,
    save_model,
)

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "mshale1_v0.pt"


def test_shipped_model_is_a_fresh_init_with_seed_0() -> None:
    model, metadata = load_model(SHIPPED)
    assert model_digest(model) == model_digest(initial_model(0))
    assert metadata == ModelMetadata(version=0, parent=None, rounds=0)


def test_init_depends_only_on_the_seed() -> None:
    torch.manual_seed(12345)  # torch's global RNG must play no part
    first = model_digest(initial_model(0))
    torch.manual_seed(999)
    assert model_digest(initial_model(0)) == first
    assert model_digest(initial_model(1)) != first


def test_model_maps_223_features_into_the_unit_interval_and_suits_opacus() -> None:
    model = initial_model(0)
    assert ModuleValidator.validate(model, strict=False) == []
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    rng = np.random.default_rng(0)
    predictions = model.predict(rng.normal(0, 10, size=(50, FEATURE_DIM)))
    assert predictions.shape == (50,) and predictions.dtype == np.float32
    assert np.all((predictions >= 0) & (predictions <= 1))


def test_digest_is_the_documented_canonical_serialisation() -> None:
    model = initial_model(0)
    expected = hashlib.sha256(b"mshale-model-digest/1\n")
    for name in sorted(model.state_dict()):
        tensor = model.state_dict()[name]
        expected.update(f"{name}\t{','.join(map(str, tensor.shape))}\n".encode())
        expected.update(tensor.numpy().astype("<f4").tobytes())
    assert model_digest(model) == expected.hexdigest()


def test_digest_changes_with_any_weight() -> None:
    model = initial_model(0)
    before = model_digest(model)
    with torch.no_grad():
        model[4].bias[0] += 1e-7
    assert model_digest(model) != before


def test_save_and_load_keep_weights_metadata_and_digest(tmp_path: Path) -> None:
    model = initial_model(3)
    path = tmp_path / "deep" / "m.pt"
    digest = save_model(path, model, ModelMetadata(version=4, parent=3, rounds=10))
    loaded, metadata = load_model(path)
    assert digest == model_digest(model) == model_digest(loaded)
    assert metadata == ModelMetadata(version=4, parent=3, rounds=10)
    assert [p.name for p in tmp_path.joinpath("deep").iterdir()] == ["m.pt"]  # no temporary left behind


def test_load_refuses_missing_foreign_and_tampered_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a readable model file"):
        load_model(tmp_path / "junk.pt")
    path = tmp_path / "m.pt"
    save_model(path, initial_model(0), ModelMetadata(version=0))
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["0.weight"][0, 0] += 1.0
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="do not match the recorded sha256"):
        load_model(path)
    torch.save({"format": "mshale-model/1", "architecture": "other"}, path)
    with pytest.raises(ModelFileError, match="architecture"):
        load_model(path)


def test_parameters_follow_flower_arrayrecord_order() -> None:
    model = initial_model(0)
    from_flower = ArrayRecord(model.state_dict()).to_numpy_ndarrays()
    ours = parameters_of(model)
    assert len(ours) == len(from_flower) == 6
    for a, b in zip(ours, from_flower, strict=True):
        np.testing.assert_array_equal(a, b)
    target = Mshale1()
    load_parameters(target, from_flower)
    assert model_digest(target) == model_digest(model)


def test_load_parameters_rejects_wrong_shapes_counts_and_nan() -> None:
    model = initial_model(0)
    arrays = parameters_of(model)
    with pytest.raises(ValueError, match="expected 6 arrays"):
        load_parameters(model, arrays[:-1])
    with pytest.raises(ValueError, match="expected shape"):
        load_parameters(model, [arrays[0].T, *arrays[1:]])
    arrays[1][0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        load_parameters(model, arrays)


def test_cli_init_writes_the_shipped_bytes_and_refuses_to_overwrite_other_weights(tmp_path: Path) -> None:
    root = typer.Typer()
    root.add_typer(model_app, name="model")
    runner = CliRunner()
    output = tmp_path / "models" / "v0.pt"
    result = runner.invoke(root, ["model", "init", "--output", str(output), "--json"])
    assert result.exit_code == 0, result.output
    assert output.read_bytes() == SHIPPED.read_bytes()
    assert model_digest(initial_model(0)) in result.output
    again = runner.invoke(root, ["model", "init", "--output", str(output)])  # same weights: fine
    assert again.exit_code == 0
    other = runner.invoke(root, ["model", "init", "--output", str(output), "--seed", "1"])
    assert other.exit_code != 0 and "--force" in str(other.exception)
    assert output.read_bytes() == SHIPPED.read_bytes()
    forced = runner.invoke(root, ["model", "init", "--output", str(output), "--seed", "1", "--force"])
    assert forced.exit_code == 0
    assert model_digest(load_model(output)[0]) == model_digest(initial_model(1))

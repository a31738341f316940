"""The shared model `mshale1`: 223 protocol features -> protocol efficiency in [0, 1].

A plain chain of Linear layers and element-wise activations (no BatchNorm, no dropout), so that
per-sample gradients are exact and cheap (`dp_sgd.py`) and Opacus accepts it unchanged.

Files (`save_model` / `load_model`): one `torch.save` of a dict of plain values and tensors, read
back with `weights_only=True` (no pickled code runs on load). The file records the architecture,
the metadata (version, parent, rounds) and the digest; `load_model` recomputes the digest and
refuses a file whose weights do not match it.

The digest (`model_digest`) is SHA-256 over a canonical serialisation, independent of torch's
pickle/zip container: a header line, then for each tensor in name order a line
`<name>\\t<shape as comma-separated ints>\\n` followed by its values as little-endian float32 in
row-major order. The same weights give the same digest whatever wrote the file (`model.published`
carries it).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic
from mshale_fl.schemas.feature_vector import FEATURE_DIM

ARCHITECTURE = "mshale1"
FILE_FORMAT = "mshale-model/1"
HIDDEN_SIZES: tuple[int, ...] = (64, 32)
DEFAULT_MODEL_PATH = Path("models/mshale1_v0.pt")
_DIGEST_HEADER = b"mshale-model-digest/1\n"


class ModelFileError(UserFacingError):
    """A model file that is missing, unreadable, of another architecture or whose digest does not match."""


class Mshale1(nn.Sequential):
    """223 -> 64 -> 32 -> 1 with ReLU and a sigmoid output: predicted protocol efficiency in [0, 1]."""

    def __init__(self) -> None:
        sizes = (FEATURE_DIM, *HIDDEN_SIZES)
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], 1), nn.Sigmoid()]
        super().__init__(*layers)

    def predict(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """Efficiency for each row of `features` ([n, 223]) as a float32 array [n]."""
        inputs = torch.as_tensor(np.asarray(features, dtype=np.float32))
        with torch.no_grad():
            return self(inputs).reshape(-1).numpy()


@dataclass(frozen=True)
class ModelMetadata:
    """What a model file says about its weights: its version, the version it was trained from, rounds run."""

    version: int
    parent: int | None = None
    rounds: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.version, int) or self.version < 0:
            raise ValueError(f"version must be an integer >= 0, got {self.version!r}")
        if self.parent is not None and (not isinstance(self.parent, int) or self.parent < 0):
            raise ValueError(f"parent must be None or an integer >= 0, got {self.parent!r}")
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise ValueError(f"rounds must be an integer >= 0, got {self.rounds!r}")


def initial_model(seed: int = 0) -> Mshale1:
    """Version 0 of the model: PyTorch's default Linear initialisation drawn from NumPy's PCG64(seed).

    NumPy's generator (not torch's global RNG) so that the weights depend only on `seed` and
    never on what else the process did with torch's RNG.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    model = Mshale1()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                # nn.Linear's default: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)), bias likewise
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, layer.weight.shape).astype(np.float32)))
                layer.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, layer.bias.shape).astype(np.float32)))
    return model


# ---------------------------------------------------------------- parameters


def parameters_of(model: nn.Module) -> list[np.ndarray]:
    """The model's tensors as float32 arrays in `state_dict` order (the order of `ArrayRecord(model.state_dict())`)."""
    return [tensor.detach().cpu().numpy().astype(np.float32, copy=True) for tensor in model.state_dict().values()]


def load_parameters(model: nn.Module, arrays: Sequence[np.ndarray]) -> None:
    """Set the model's tensors from arrays in `parameters_of` order; shapes must match exactly."""
    names = list(model.state_dict().keys())
    if len(arrays) != len(names):
        raise ValueError(f"expected {len(names)} arrays ({', '.join(names)}), got {len(arrays)}")
    state = OrderedDict()
    for name, current, array in zip(names, model.state_dict().values(), arrays, strict=True):
        array = np.asarray(array)
        if tuple(array.shape) != tuple(current.shape):
            raise ValueError(f"{name}: expected shape {tuple(current.shape)}, got {tuple(array.shape)}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: contains NaN or infinite values")
        state[name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    model.load_state_dict(state)


# ---------------------------------------------------------------- digest


def state_digest(state: dict[str, torch.Tensor] | dict[str, np.ndarray]) -> str:
    """SHA-256 (hex) of a name -> tensor mapping in the canonical serialisation (module docstring)."""
    digest = hashlib.sha256(_DIGEST_HEADER)
    for name in sorted(state):
        value = state[name]
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        little_endian = np.ascontiguousarray(array, dtype="<f4")
        digest.update(f"{name}\t{','.join(str(d) for d in array.shape)}\n".encode())
        digest.update(little_endian.tobytes(order="C"))
    return digest.hexdigest()


def model_digest(model: nn.Module) -> str:
    """SHA-256 (hex) of the model's weights, independent of how (or whether) they were saved."""
    return state_digest(model.state_dict())


# ---------------------------------------------------------------- files


def save_model(path: Path | str, model: nn.Module, metadata: ModelMetadata) -> str:
    """Write the model atomically; returns its digest."""
    digest = model_digest(model)
    payload = {
        "format": FILE_FORMAT,
        "architecture": ARCHITECTURE,
        "metadata": asdict(metadata),
        "sha256": digest,
        "state_dict": OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items()),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(Path(path), buffer.getvalue())
    return digest


def load_model(path: Path | str) -> tuple[Mshale1, ModelMetadata]:
    """The model and its metadata; raises ModelFileError for a missing, foreign or tampered file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist (create version 0 with `mshale-fl model init`)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many types for a foreign file; weights_only refuses code
        raise ModelFileError(f"{path} is not a readable model file ({error.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ModelFileError(f"{path} is not an mshale model file (format {FILE_FORMAT})")
    if payload.get("architecture") != ARCHITECTURE:
        raise ModelFileError(f"{path} holds architecture {payload.get('architecture')!r}, expected {ARCHITECTURE!r}")
    try:
        metadata = ModelMetadata(**payload["metadata"])
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: invalid metadata ({error})") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path}: no weights in the file")
    if state_digest(state) != payload.get("sha256"):
        raise ModelFileError(f"{path}: the weights do not match the recorded sha256 (corrupt or edited file)")
    model = Mshale1()
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFileError(f"{path}: weights do not fit {ARCHITECTURE} ({str(error).splitlines()[0]})") from None
    return model, metadata

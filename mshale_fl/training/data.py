"""A partner's Tier 3 training data: its efficiency protocols, featurised, with their outcomes.

Everything happens in memory on the partner: the corpus is read, each protocol extracted
(`extract_spec`) and featurised (`feature_values`, the same 223 Tier 2 features the model reads);
nothing is written (no specs, no manifest, no salt) and nothing is sent. Outcomes never leave the
partner: they are training targets only, and what leaves is the DP-noised update.

Which protocols train. A protocol is used when all of these hold, and otherwise listed in
`skipped` with the reason:

- its sensitivity label (front matter > `mshale.toml` rule > default, as `extract`) is `efficiency`;
- the policy allows it at tier 3 (`decide(label, 3, agreements)`: the federated training agreement
  and a DPA or IRB approval in `[agreements]`; `local_mode` never);
- it has an outcome: a number in [0, 1] (the protocol's efficiency, e.g. its success rate);
- it extracts to at least one step.

Where the outcome comes from. Front matter `outcome: 0.82` in a Markdown or text protocol — it sits
with the `sensitivity` label that already makes the file an efficiency protocol, and the reader
already keeps front matter out of the protocol text. A protocols.io JSON export has no front
matter, so an outcome can also come from a sidecar file beside the protocol,
`<file name>.outcome.json` holding `{"outcome": 0.82}` (for `pcr.json`: `pcr.json.outcome.json`);
it also lets a lab keep outcomes out of the protocol files altogether. If both are present they
must agree. Sidecars are never read as protocols.

The spec's content hash (salted HMAC) plays no part in training; it is computed under a throw-away
random salt so that loading training data never creates or touches the partner's salt file.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mshale_fl.agents.partner.extract.pipeline import NoSteps, extract_spec
from mshale_fl.agents.partner.extract.reader import OUTCOME_SIDECAR_SUFFIX, ReadFailure, corpus_files, read_one
from mshale_fl.agents.partner.extract.sensitivity import label_of, load_config
from mshale_fl.agents.partner.featurize import feature_values
from mshale_fl.agents.partner.policy import decide
from mshale_fl.errors import UserFacingError
from mshale_fl.schemas.feature_vector import FEATURE_DIM
from mshale_fl.schemas.vocabulary import Sensitivity

TRAINING_TIER = 3


class TrainingDataError(UserFacingError):
    """The corpus cannot be read as training data at all (missing folder, unusable config)."""


@dataclass(frozen=True)
class TrainingData:
    """Features [n, 223] float32, outcomes [n] float32 in [0, 1], and the source path of each row."""

    features: np.ndarray
    targets: np.ndarray
    sources: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (source, reason), for the partner's eyes only

    def __len__(self) -> int:
        return len(self.sources)

    def skip_reasons(self) -> dict[str, int]:
        """How many protocols were left out, per reason code (the part of the reason before ':')."""
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped))


class _OutcomeError(ValueError):
    pass


def _outcome_value(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _OutcomeError(f"outcome_invalid: {where} is {value!r}, not a number in [0, 1]")
    number = float(value)
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise _OutcomeError(f"outcome_out_of_range: {where} is {number!r}, outside [0, 1]")
    return number


def _sidecar_outcome(path: Path) -> float | None:
    sidecar = path.with_name(path.name + OUTCOME_SIDECAR_SUFFIX)
    if not sidecar.is_file():
        return None
    try:
        document = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _OutcomeError(f"outcome_invalid: {sidecar.name} is not readable JSON ({error.__class__.__name__})") from None
    if not isinstance(document, dict) or "outcome" not in document:
        raise _OutcomeError(f'outcome_invalid: {sidecar.name} must be {{"outcome": <number in [0, 1]>}}')
    return _outcome_value(document["outcome"], sidecar.name)


def _outcome(path: Path, front_matter: dict) -> float | None:
    """The protocol's outcome from its front matter and/or its sidecar (they must agree), or None."""
    from_front = _outcome_value(front_matter["outcome"], "front matter outcome") if "outcome" in front_matter else None
    from_sidecar = _sidecar_outcome(path)
    if from_front is not None and from_sidecar is not None and from_front != from_sidecar:
        raise _OutcomeError(f"outcome_conflict: front matter says {from_front}, the sidecar {from_sidecar}")
    return from_front if from_front is not None else from_sidecar


def is_outcome_sidecar(path: Path) -> bool:
    return path.name.endswith(OUTCOME_SIDECAR_SUFFIX)


def load_training_data(corpus: Path | str, *, config_path: Path | None = None, local_mode: bool = False) -> TrainingData:
    """Extract and featurise the corpus's efficiency protocols that have outcomes (see the module docstring)."""
    corpus = Path(corpus)
    if not corpus.is_dir():
        raise TrainingDataError(f"corpus folder {corpus} does not exist or is not a folder")
    config = load_config(config_path, corpus)  # raises ConfigError (a UserFacingError) itself
    agreements = config.agreements_for_policy()
    salt = secrets.token_bytes(32)  # throw-away: the hash is not used (module docstring)
    rows: list[np.ndarray] = []
    targets: list[float] = []
    sources: list[str] = []
    skipped: list[tuple[str, str]] = []
    for path in corpus_files(corpus):
        if is_outcome_sidecar(path):
            continue
        protocol = read_one(path, corpus)
        if isinstance(protocol, ReadFailure):
            skipped.append((protocol.source, f"unreadable: {protocol.reason}"))
            continue
        label = label_of(protocol.source, protocol.front_matter.get("sensitivity"), config)
        if label.sensitivity is not Sensitivity.EFFICIENCY:
            skipped.append((protocol.source, f"not_efficiency: labelled {label.sensitivity.value}"))
            continue
        decision = decide(label.sensitivity, TRAINING_TIER, agreements, local_mode=local_mode)
        if not decision.transmittable:
            skipped.append((protocol.source, f"{decision.reason}: {decision.explanation}"))
            continue
        try:
            outcome = _outcome(path, protocol.front_matter)
        except _OutcomeError as error:
            skipped.append((protocol.source, str(error)))
            continue
        if outcome is None:
            skipped.append((protocol.source, "no_outcome: no front matter outcome and no sidecar"))
            continue
        try:
            spec = extract_spec(protocol, salt).spec
        except NoSteps as error:
            skipped.append((protocol.source, f"no_steps: {error}"))
            continue
        rows.append(feature_values(spec))
        targets.append(outcome)
        sources.append(protocol.source)
    features = np.stack(rows).astype(np.float32) if rows else np.zeros((0, FEATURE_DIM), dtype=np.float32)
    return TrainingData(features, np.asarray(targets, dtype=np.float32), tuple(sources), tuple(skipped))

"""The partner agent's config file (`mshale-fl agent run --config partner.toml`), checked in full at start.

The file is a partner config (`[sensitivity]`, `[agreements]`, read by the same `load_config` that
`extract` uses, so labels and agreements mean the same thing everywhere) plus the daemon's own keys:

    partner_id = "lab-a"                  # optional: must match the API key, which names its partner
    corpus = "/srv/protocols"             # required; relative paths are relative to this file
    tier = 1                              # 1 specs, 2 feature vectors (needs a DPA), 3 also federated training
    api_key_file = "/etc/mshale/api-key"  # else MSHALE_API_KEY
    home = "/var/lib/mshale"              # else MSHALE_HOME; the agent keeps its state in <home>/agent
    broker_url = "amqps://broker.mishale.example/"   # else MSHALE_BROKER_URL (credentials are replaced)

    [agent]    poll_seconds, settle_seconds, receipt_timeout, retry_seconds, batch_files, shutdown_grace
    [audit]    verifier_key (`mshale-fl audit pubkey` prints it), check_seconds, receipt_wait
    [training] dp_epsilon, heartbeat_seconds (Tier 3)

Every mistake is one line naming the file and the fix (`AgentConfigError`): an unknown key (with
the closest known one), a missing corpus, a tier other than 1-3, a missing API key, an agreement
the tier needs. Nothing is contacted while loading.

What a Tier 3 agent submits: Tier 3 partners share what Tiers 1 and 2 share, so the agent also
submits vectors when `[agreements] dpa = true`, otherwise specs (`submit_tier`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from mshale_fl.agents.partner.extract.reader import CONFIG_FILE_NAME
from mshale_fl.agents.partner.extract.sensitivity import (
    AgreementsSection,
    ConfigError,
    PartnerConfig,
    SensitivitySection,
    load_config,
)
from mshale_fl.audit.note import KeyFormatError, NoteVerifier
from mshale_fl.config import Settings, get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.ledger.api_keys import partner_id_from_key
from mshale_fl.logging import get_logger

log = get_logger(__name__)

STATE_FOLDER = "agent"
"""The agent's state lives in <home>/agent (see agent_state.py)."""
TIER_NAMES = {1: "specs", 2: "feature vectors", 3: "federated training"}


class AgentConfigError(UserFacingError, ValueError):
    """The agent config cannot be used; the message names the file, the key and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSection(_Section):
    poll_seconds: float = Field(default=5.0, gt=0, le=3600, description="Seconds between two scans of the corpus")
    settle_seconds: float = Field(
        default=2.0, ge=0, le=3600, description="A file is read only once unchanged this long (still being written)"
    )
    receipt_timeout: float = Field(default=60.0, gt=0, le=3600, description="Seconds to wait for Mishale's receipts")
    retry_seconds: float = Field(
        default=30.0, gt=0, le=86400, description="Longest wait before retrying a broker or a missing receipt"
    )
    batch_files: int = Field(default=200, ge=1, le=10_000, description="Changed files extracted and sent per step")
    shutdown_grace: float = Field(
        default=10.0, ge=0, le=600, description="On SIGTERM, seconds in-flight sending may finish before it is abandoned"
    )


class AuditSection(_Section):
    verifier_key: str | None = Field(default=None, description="The log's verifier key (`mshale-fl audit pubkey`)")
    check_seconds: float = Field(default=300.0, gt=0, le=86400, description="Seconds between checkpoint checks")
    receipt_wait: float = Field(default=10.0, gt=0, le=600, description="Seconds to wait for one audit receipt")


class TrainingSection(_Section):
    dp_epsilon: float = Field(default=1.0, gt=0, description="Your privacy budget per model version")
    heartbeat_seconds: float = Field(default=5.0, ge=0.05, le=600, description="Seconds between presence hellos")

    @field_validator("dp_epsilon")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class AgentFile(_Section):
    """The file as written (every key known; unknown keys are refused)."""

    partner_id: str | None = None
    corpus: Path
    tier: StrictInt
    api_key_file: Path | None = None
    home: Path | None = None
    broker_url: str | None = None
    agent: AgentSection = AgentSection()
    audit: AuditSection = AuditSection()
    training: TrainingSection = TrainingSection()
    sensitivity: SensitivitySection = SensitivitySection()
    agreements: AgreementsSection = AgreementsSection()

    @field_validator("tier")
    @classmethod
    def _known_tier(cls, value: int) -> int:
        if value not in TIER_NAMES:
            raise ValueError(f"must be 1 (specs), 2 (feature vectors) or 3 (federated training), got {value}")
        return value


@dataclass(frozen=True)
class AgentConfig:
    """Everything the daemon needs, resolved: absolute paths, the API key, the partner id, the verifier."""

    path: Path
    partner_id: str
    corpus: Path
    tier: int
    home: Path
    broker_url: str
    agent: AgentSection
    audit: AuditSection
    training: TrainingSection
    partner_config: PartnerConfig = field(repr=False)
    api_key: str = field(repr=False)
    api_key_source: str = ""
    verifier: NoteVerifier | None = field(default=None, repr=False)

    @property
    def state_dir(self) -> Path:
        return self.home / STATE_FOLDER

    @property
    def submit_tier(self) -> int:
        """The tier of what is submitted: 1 specs, 2 vectors; Tier 3 submits vectors under a DPA, else specs."""
        if self.tier == 3:
            return 2 if self.partner_config.agreements.dpa else 1
        return self.tier

    @property
    def fingerprint(self) -> str:
        """Changes when anything that decides what leaves changes: then every file is looked at again."""
        decisive = {
            "tier": self.submit_tier,
            "sensitivity": self.partner_config.sensitivity.model_dump(mode="json"),
            "agreements": self.partner_config.agreements.model_dump(mode="json"),
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]


def _where(location: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in location) or "(file)"


def _known_keys(location: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = AgentFile
    for part in location[:-1]:
        annotation = model.model_fields.get(str(part))
        if annotation is None or not isinstance(annotation.annotation, type) or not issubclass(annotation.annotation, BaseModel):
            return []
        model = annotation.annotation
    return list(model.model_fields)


def _problem(error: dict[str, Any]) -> str:
    location = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        known = _known_keys(location)
        close = difflib.get_close_matches(str(location[-1]), known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else (f" (known: {', '.join(known)})" if known else "")
        return f"unknown key {_where(location)!r}{hint}"
    if error["type"] == "missing":
        return f"{_where(location)!r} is required"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{_where(location)}: {message}"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AgentConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise AgentConfigError(f"config file {path} is a folder; pass the partner.toml file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise AgentConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise AgentConfigError(f"{path} is not valid TOML: {error}") from None


def _api_key(written: AgentFile, base: Path, settings: Settings, path: Path) -> tuple[str, str]:
    """(the key, where it came from): `api_key_file` if the config names one, else MSHALE_API_KEY."""
    if written.api_key_file is not None:
        key_file = written.api_key_file if written.api_key_file.is_absolute() else base / written.api_key_file
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise AgentConfigError(f"{path}: api_key_file {key_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            raise AgentConfigError(f"{path}: cannot read api_key_file {key_file}: {error}") from None
        if not key:
            raise AgentConfigError(f"{path}: api_key_file {key_file} is empty; put your partner API key in it")
        if key_file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("agent.api_key_file_readable_by_others", file=str(key_file), fix=f"chmod 600 {key_file}")
        return key, str(key_file)
    if settings.api_key is not None and settings.api_key.get_secret_value().strip():
        return settings.api_key.get_secret_value().strip(), "MSHALE_API_KEY"
    raise AgentConfigError(
        f"no API key: set api_key_file in {path} (a file holding only the key, chmod 600) or MSHALE_API_KEY"
    )


def read_agent_file(path: Path | str) -> tuple[Path, AgentFile]:
    """The file, parsed and checked key by key (no paths or keys are looked at yet)."""
    path = Path(path).expanduser()
    data = _read_toml(path)
    try:
        return path, AgentFile.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(_problem(e) for e in error.errors(include_url=False))
        raise AgentConfigError(f"{path}: {problems}") from None


def resolve_home(path: Path, written: AgentFile, settings: Settings) -> Path:
    """`home` from the file (relative to it), else MSHALE_HOME (relative to the working folder, as every command)."""
    if written.home is None:
        return settings.home.expanduser().resolve()
    home = written.home.expanduser()
    return home if home.is_absolute() else path.resolve().parent / home


def load_agent_config(path: Path | str, settings: Settings | None = None) -> AgentConfig:
    """Read and check the whole config (see the module docstring); raises `AgentConfigError` (one line)."""
    settings = settings or get_settings()
    path, written = read_agent_file(path)
    base = path.resolve().parent

    corpus = written.corpus.expanduser()
    corpus = corpus if corpus.is_absolute() else base / corpus
    if not corpus.is_dir():
        what = "is not a folder" if corpus.exists() else "does not exist"
        raise AgentConfigError(f"{path}: corpus {corpus} {what}; set `corpus` to the folder of your protocols")
    if not os.access(corpus, os.R_OK | os.X_OK):
        raise AgentConfigError(f"{path}: corpus {corpus} cannot be read by this user")

    try:
        partner_config = load_config(path)
        partner_config.require_agreement_for(written.tier)  # Tier 2: a DPA
    except ConfigError as error:
        raise AgentConfigError(str(error)) from None
    if written.tier == 3 and not partner_config.agreements.federated_training:
        raise AgentConfigError(
            f"{path}: Tier 3 (federated training) needs the federated training agreement, declared as "
            "`[agreements] federated_training = true`; use tier = 1 or 2, or set it once the agreement is signed"
        )

    verifier = None
    if written.audit.verifier_key is not None:
        try:
            verifier = NoteVerifier.from_key(written.audit.verifier_key)
        except KeyFormatError as error:
            raise AgentConfigError(
                f"{path}: audit.verifier_key is not a verifier key ({error}); paste what `mshale-fl audit pubkey` prints"
            ) from None

    api_key, api_key_source = _api_key(written, base, settings, path)
    try:
        partner_id = partner_id_from_key(api_key)  # keys name their partner; `submit` relies on it too
    except UserFacingError as error:
        raise AgentConfigError(f"{path}: the API key from {api_key_source} cannot be used: {error}") from None
    declared = written.partner_id or settings.partner_id
    if declared and declared != partner_id:
        raise AgentConfigError(
            f"{path}: partner_id {declared!r} does not match the API key, which belongs to {partner_id!r}"
        )

    return AgentConfig(
        path=path.resolve(),
        partner_id=partner_id,
        corpus=corpus.resolve(),
        tier=written.tier,
        home=resolve_home(path, written, settings),
        broker_url=written.broker_url or settings.broker_url,
        agent=written.agent,
        audit=written.audit,
        training=written.training,
        partner_config=partner_config,
        api_key=api_key,
        api_key_source=api_key_source,
        verifier=verifier,
    )


def shadowed_corpus_config(config: AgentConfig) -> Path | None:
    """A `mshale.toml` at the corpus root that the agent does not read (its own config decides labels)."""
    candidate = config.corpus / CONFIG_FILE_NAME
    if candidate.is_file() and candidate.resolve() != config.path:
        return candidate
    return None


__all__ = [
    "AgentConfig",
    "AgentConfigError",
    "AgentFile",
    "TIER_NAMES",
    "load_agent_config",
    "read_agent_file",
    "resolve_home",
    "shadowed_corpus_config",
]

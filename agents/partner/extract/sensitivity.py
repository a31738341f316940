"""The partner config (`mshale.toml`) and each protocol's data sensitivity label.

Config file: `--config FILE`, else `mshale.toml` at the corpus root, else built-in defaults.

    [sensitivity]
    default = "published"                  # label of unlabelled protocols; "full-ip" if unset
    rules = [                              # first matching rule wins, in file order
      {glob = "internal/**", label = "internal"},
      {glob = "**/*-efficiency.md", label = "efficiency"},
    ]

    [agreements]                           # what the partner has signed (see policy.py)
    dpa = false
    irb = false
    federated_training = false

Precedence of a protocol's label: its own front matter (`sensitivity: internal` in Markdown
front matter, or a top-level `"sensitivity"` in JSON) > the first glob rule matching its path
relative to the corpus root > `[sensitivity] default` > `full-ip`. A protocol names its own
sensitivity most precisely, so it wins; an unknown label in front matter is treated as `full-ip`
(the most restrictive) and reported. Globs: `*` and `?` stay within one folder, `**` crosses
folders (`internal/**` matches `internal/a.md` and `internal/x/b.md`).
Other sections of the file belong to other components and are ignored here.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mshale_fl.agents.partner.extract.reader import CONFIG_FILE_NAME
from mshale_fl.agents.partner.policy import Agreements
from mshale_fl.schemas.vocabulary import Sensitivity
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mshale_fl.errors import UserFacingError

MOST_RESTRICTIVE = Sensitivity.FULL_IP


class ConfigError(UserFacingError, ValueError):
    """The partner config cannot be used; the message says where and why."""


class AgreementRequired(ConfigError):
    """The tier asked for needs an agreement the partner config does not name (Tier 2: a DPA)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LabelRule(_Strict):
    glob: str = Field(min_length=1)
    label: Sensitivity


class SensitivitySection(_Strict):
    default: Sensitivity = MOST_RESTRICTIVE
    rules: list[LabelRule] = []


class AgreementsSection(_Strict):
    dpa: bool = False
    irb: bool = False
    federated_training: bool = False


class PartnerConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    sensitivity: SensitivitySection = SensitivitySection()
    agreements: AgreementsSection = AgreementsSection()
    source: str | None = Field(default=None, exclude=True)

    def agreements_for_policy(self) -> Agreements:
        return Agreements(dpa=self.agreements.dpa, irb=self.agreements.irb,
                          federated_training=self.agreements.federated_training)  # fmt: skip

    def require_agreement_for(self, tier: int) -> None:
        """Raise `AgreementRequired` (one line) if this config cannot contribute at `tier`.

        Tier 2 sends feature vectors, which the partner agent does only under a Data Processing
        Agreement (`[agreements] dpa = true`); Mishale checks its own record of the DPA again.
        """
        if tier == 2 and not self.agreements.dpa:
            where = (f"{self.source} does not set it" if self.source
                     else "no partner config was found (mshale.toml at the corpus root, or --config FILE)")  # fmt: skip
            raise AgreementRequired(
                f"Tier 2 (feature vectors) needs a Data Processing Agreement with Mishale, declared as "
                f"`[agreements] dpa = true` in the partner config; {where}. Use --tier 1, or set it once the DPA is signed"
            )


def load_config(path: Path | None, corpus: Path | None = None) -> PartnerConfig:
    """The config at `path`, else `<corpus>/mshale.toml`, else defaults (everything `full-ip`)."""
    if path is None and corpus is not None and (corpus / CONFIG_FILE_NAME).is_file():
        path = corpus / CONFIG_FILE_NAME
    if path is None:
        return PartnerConfig()
    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{path} is not a partner config: its TOML is nested too deeply") from None
    try:
        config = PartnerConfig.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors(include_url=False)
        )
        raise ConfigError(f"{path}: {problems}") from None
    return config.model_copy(update={"source": str(path)})


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """A path glob as a regex over POSIX relative paths: `**` crosses folders, `*` and `?` do not."""
    pattern = ""
    index = 0
    while index < len(glob):
        if glob.startswith("**/", index):
            pattern += "(?:.*/)?"
            index += 3
        elif glob.startswith("**", index):
            pattern += ".*"
            index += 2
        elif glob[index] == "*":
            pattern += "[^/]*"
            index += 1
        elif glob[index] == "?":
            pattern += "[^/]"
            index += 1
        else:
            pattern += re.escape(glob[index])
            index += 1
    return re.compile(pattern + r"\Z")


@dataclass(frozen=True, slots=True)
class Label:
    sensitivity: Sensitivity
    source: str  # "front_matter", "front_matter_invalid", "rule:<glob>", "default", "built_in_default"


def label_of(relative_path: str, front_matter_value: object, config: PartnerConfig) -> Label:
    """A protocol's sensitivity label and where it came from (see the module docstring for precedence)."""
    if front_matter_value is not None:
        try:
            return Label(Sensitivity(str(front_matter_value).strip().lower()), "front_matter")
        except ValueError:
            return Label(MOST_RESTRICTIVE, "front_matter_invalid")
    for rule in config.sensitivity.rules:
        if glob_to_regex(rule.glob).match(relative_path):
            return Label(rule.label, f"rule:{rule.glob}")
    if "default" in config.sensitivity.model_fields_set:
        return Label(config.sensitivity.default, "default")
    return Label(config.sensitivity.default, "built_in_default")

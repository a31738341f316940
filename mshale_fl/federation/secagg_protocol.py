"""Secure aggregation inside Flower messages: the stages, their record keys, and the round parameters.

With secure aggregation (the Tier 3 default) a round is six exchanges instead of two:

| message type | server sends | partner replies |
|---|---|---|
| `query.dp_plan` | as without SecAgg | its plan and its identity public key (`identity`) |
| `train` | weights, config and the `secagg` round parameters | metrics (no weights, no example count) and its signed round keys (stage 1, *advertise keys*) |
| `train.secagg_share_keys` | every advertisement and every partner's registered identity key | Shamir shares of its secrets, encrypted per neighbour (stage 2) |
| `train.secagg_masked_input` | the ciphertexts addressed to it | its masked, quantised, example-weighted update (stage 3) |
| `train.secagg_confirm` | the survivor set | its signature of that set (stage 4, the consistency check) |
| `train.secagg_unmask` | the survivor set with the survivors' signatures | shares that remove the masks (stage 5) |

Payloads are the byte encodings of `mshale_fl.secagg.wire`, carried as `bytes` values of one
`ConfigRecord` named `secagg`. A partner missing a stage's deadline is a dropout at that stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flwr.app import ConfigRecord

from mshale_fl.secagg.protocol import RoundConfig
from mshale_fl.secagg.quantize import QuantizationConfig

SHARE_KEYS_MESSAGE_TYPE = "train.secagg_share_keys"
MASKED_INPUT_MESSAGE_TYPE = "train.secagg_masked_input"
CONFIRM_MESSAGE_TYPE = "train.secagg_confirm"
UNMASK_MESSAGE_TYPE = "train.secagg_unmask"

SECAGG_RECORD = "secagg"

# -- round parameters, in the `train` message's `secagg` record ---------------------------------
ROUND_ID = "round-id"  # bytes: binds every key and signature to this attempt of this round
COHORT = "cohort"  # list[str]: the partners in cohort order (Shamir x = position + 1)
THRESHOLD = "threshold"
NEIGHBOURS = "neighbours"  # 0: complete graph; k: SecAgg+ k-regular graph
MODULUS_BITS = "modulus-bits"
CLIP = "clip"
L2_CLIP = "l2-clip"  # 0.0: none
MAX_EXAMPLES = "max-examples"
MAX_PARTNERS = "max-partners"

# -- stage payloads ----------------------------------------------------------------------------
IDENTITY_KEY = "identity-key"  # raw Ed25519 public key, in the `identity` record of plan and train replies
ADVERTISEMENT = "advertisement"
ADVERTISEMENTS = "advertisements"
REGISTRY = "registry"
OUTBOX = "outbox"
INBOX = "inbox"
MASKED = "masked"
REQUEST = "request"
SIGNATURE = "signature"
RESPONSE = "response"


class SecAggConfigError(ValueError):
    """Round parameters a partner will not accept (malformed, or weaker than its policy allows)."""


@dataclass(frozen=True)
class SecAggSettings:
    """The operator's choices (`mshale-fl serve --secagg-*`), logged at the start of every round.

    `threshold_fraction` sets t = max(2, ceil(fraction x shares held per partner)); partners refuse a
    t that is not a strict majority of the holders, the bound under which a server that lies about
    who survived still cannot unmask one partner. `neighbours` 0 is Bonawitz's complete graph; an
    even k < n is SecAgg+ (each partner masks and shares with k others), for large cohorts.
    `clip` bounds every coordinate of an update (new weights minus global weights) before
    quantisation; `modulus_bits`, `max_examples` and `max_partners` fix the quantisation scale so
    that the sum cannot wrap (secagg/quantize.py).
    """

    threshold_fraction: float = 0.6
    neighbours: int = 0
    modulus_bits: int = 48
    clip: float = 1.0
    l2_clip: float = 0.0
    max_examples: int = 100_000
    max_partners: int = 100
    stage_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not 0.5 < self.threshold_fraction <= 1.0:
            raise SecAggConfigError(
                f"the secure-aggregation threshold fraction must be in (0.5, 1], not {self.threshold_fraction}: "
                "partners accept only a strict majority"
            )
        if self.neighbours < 0 or self.neighbours % 2:
            raise SecAggConfigError(f"the SecAgg+ neighbour count must be 0 or even, not {self.neighbours}")
        if self.stage_timeout <= 0:
            raise SecAggConfigError("the secure-aggregation stage timeout must be positive")
        self.quantization  # validates clip, bits and bounds

    @property
    def quantization(self) -> QuantizationConfig:
        try:
            return QuantizationConfig(
                modulus_bits=self.modulus_bits,
                clip=self.clip,
                max_examples=self.max_examples,
                max_partners=self.max_partners,
                l2_clip=self.l2_clip or None,
            )
        except ValueError as error:
            raise SecAggConfigError(f"secure-aggregation quantisation: {error}") from None

    def round_config(self, round_id: bytes, cohort: list[str], vector_length: int) -> RoundConfig:
        n = len(cohort)
        neighbours = self.neighbours if 0 < self.neighbours < n else None
        holders = n if neighbours is None else neighbours + 1
        threshold = max(2, math.ceil(self.threshold_fraction * holders))
        try:
            return RoundConfig(
                round_id=round_id,
                partner_ids=tuple(cohort),
                threshold=min(threshold, holders),
                vector_length=vector_length,
                modulus_bits=self.modulus_bits,
                neighbours=neighbours,
            )
        except ValueError as error:
            raise SecAggConfigError(f"secure aggregation cannot run with {n} partners: {error}") from None


def round_record(config: RoundConfig, quantization: QuantizationConfig) -> ConfigRecord:
    return ConfigRecord(
        {
            ROUND_ID: config.round_id,
            COHORT: list(config.partner_ids),
            THRESHOLD: config.threshold,
            NEIGHBOURS: config.neighbours or 0,
            MODULUS_BITS: config.modulus_bits,
            CLIP: float(quantization.clip),
            L2_CLIP: float(quantization.l2_clip or 0.0),
            MAX_EXAMPLES: quantization.max_examples,
            MAX_PARTNERS: quantization.max_partners,
        }
    )


def parse_round_record(record: ConfigRecord, partner_id: str, vector_length: int) -> tuple[RoundConfig, QuantizationConfig]:
    """The round parameters as a partner checks them: well formed, including it, and a majority threshold."""
    try:
        cohort = tuple(str(p) for p in record[COHORT])  # type: ignore[union-attr]
        neighbours = int(record[NEIGHBOURS]) or None  # type: ignore[arg-type]
        round_id = record[ROUND_ID]
        if not isinstance(round_id, bytes) or len(round_id) < 16:
            raise SecAggConfigError("the secure-aggregation round id must be at least 16 bytes")
        config = RoundConfig(
            round_id=round_id,
            partner_ids=cohort,
            threshold=int(record[THRESHOLD]),  # type: ignore[arg-type]
            vector_length=vector_length,
            modulus_bits=int(record[MODULUS_BITS]),  # type: ignore[arg-type]
            neighbours=neighbours,
        )
        l2_clip = float(record[L2_CLIP])  # type: ignore[arg-type]
        quantization = QuantizationConfig(
            modulus_bits=config.modulus_bits,
            clip=float(record[CLIP]),  # type: ignore[arg-type]
            max_examples=int(record[MAX_EXAMPLES]),  # type: ignore[arg-type]
            max_partners=int(record[MAX_PARTNERS]),  # type: ignore[arg-type]
            l2_clip=l2_clip or None,
        )
    except SecAggConfigError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        raise SecAggConfigError(f"malformed secure-aggregation parameters: {error}") from None
    if partner_id not in cohort:
        raise SecAggConfigError(f"this partner ({partner_id}) is not in the round's cohort")
    holders = len(cohort) if neighbours is None else neighbours + 1
    if 2 * config.threshold <= holders:
        raise SecAggConfigError(
            f"threshold {config.threshold} of {holders} share holders is not a strict majority; this partner "
            "refuses a round in which a minority could unmask it"
        )
    if len(cohort) > quantization.max_partners:
        raise SecAggConfigError(f"the cohort ({len(cohort)}) exceeds max-partners ({quantization.max_partners})")
    return config, quantization


__all__ = [name for name in dir() if name.isupper()] + [
    "SecAggConfigError",
    "SecAggSettings",
    "parse_round_record",
    "round_record",
]

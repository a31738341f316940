"""Run a whole round in one process, with chosen dropouts at each stage.

Used by the tests and, later, by the benchmark; the federation code will drive the same client and
server objects over Flower messages instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mshale_fl.secagg.protocol import RoundConfig, SecAggClient, SecAggServer


@dataclass(frozen=True)
class Dropouts:
    """Partners that stop answering before each stage (cumulative: a dropped partner stays dropped)."""

    before_advertise: AbstractSet[str] = frozenset()
    before_share_keys: AbstractSet[str] = frozenset()
    before_masked_input: AbstractSet[str] = frozenset()
    before_consistency_check: AbstractSet[str] = frozenset()
    before_unmask: AbstractSet[str] = frozenset()


@dataclass
class RoundResult:
    total: np.ndarray
    server: SecAggServer
    clients: dict[str, SecAggClient] = field(default_factory=dict)


def make_identities(
    partner_ids: list[str] | tuple[str, ...],
) -> dict[str, Ed25519PrivateKey]:
    return {p: Ed25519PrivateKey.generate() for p in partner_ids}


def run_round(
    config: RoundConfig,
    inputs: Mapping[str, np.ndarray],
    dropouts: Dropouts = Dropouts(),
    identities: Mapping[str, Ed25519PrivateKey] | None = None,
) -> RoundResult:
    """Run the four stages; raises `TooFewSurvivorsError` when the dropouts leave fewer than t."""
    identities = identities or make_identities(config.partner_ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    clients = {
        p: SecAggClient(p, identities[p], config, registry) for p in config.partner_ids
    }
    server = SecAggServer(config)
    gone = set(dropouts.before_advertise)

    ads = {p: c.advertise_keys() for p, c in clients.items() if p not in gone}
    broadcast = server.collect_advertisements(ads)

    gone |= dropouts.before_share_keys
    outboxes = {p: clients[p].share_keys(broadcast) for p in ads if p not in gone}
    inboxes = server.relay_shares(outboxes)

    gone |= dropouts.before_masked_input
    masked = {
        p: clients[p].mask_input(inboxes[p], inputs[p])
        for p in inboxes
        if p not in gone
    }
    request = server.collect_masked_inputs(masked)

    gone |= dropouts.before_consistency_check
    signatures = {
        p: clients[p].confirm_survivors(request)
        for p in request.survivors
        if p not in gone
    }
    request = server.collect_confirmations(signatures)

    gone |= dropouts.before_unmask
    responses = {
        p: clients[p].unmask(request) for p in request.survivors if p not in gone
    }
    total = server.unmask(responses)
    return RoundResult(total=total, server=server, clients=clients)

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

from mshale_fl.secagg import wire
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
    bytes_uploaded: dict[str, int] = field(
        default_factory=dict
    )  # partner -> bytes it sent
    bytes_downloaded: dict[str, int] = field(
        default_factory=dict
    )  # partner -> bytes it received


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
    """Run every stage, passing each message through its wire encoding and counting its bytes.

    Raises `TooFewSurvivorsError` when the dropouts leave fewer than t partners.
    """
    identities = identities or make_identities(config.partner_ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    clients = {
        p: SecAggClient(p, identities[p], config, registry) for p in config.partner_ids
    }
    server = SecAggServer(config)
    up = dict.fromkeys(config.partner_ids, 0)
    down = dict.fromkeys(config.partner_ids, 0)

    def upload(partner: str, data: bytes) -> bytes:
        up[partner] += len(data)
        return data

    def download(partner: str, data: bytes) -> bytes:
        down[partner] += len(data)
        return data

    bits, d = config.modulus_bits, config.vector_length
    gone = set(dropouts.before_advertise)

    ads = {
        p: wire.decode_advertisement(
            upload(p, wire.encode_advertisement(c.advertise_keys()))
        )
        for p, c in clients.items()
        if p not in gone
    }
    broadcast = wire.encode_bytes_map(
        {
            p: wire.encode_advertisement(a)
            for p, a in server.collect_advertisements(ads).items()
        }
    )

    gone |= dropouts.before_share_keys
    outboxes = {}
    for p in ads:
        if p in gone:
            continue
        received = wire.decode_bytes_map(download(p, broadcast))
        ads_for_p = {q: wire.decode_advertisement(a) for q, a in received.items()}
        outbox = wire.encode_bytes_map(clients[p].share_keys(ads_for_p))
        outboxes[p] = wire.decode_bytes_map(upload(p, outbox))
    inboxes = server.relay_shares(outboxes)

    gone |= dropouts.before_masked_input
    masked = {}
    for p in inboxes:
        if p in gone:
            continue
        inbox = wire.decode_bytes_map(download(p, wire.encode_bytes_map(inboxes[p])))
        y = wire.encode_vector(clients[p].mask_input(inbox, inputs[p]), bits)
        masked[p] = wire.decode_vector(upload(p, y), bits, d)
    first_request = server.collect_masked_inputs(masked)
    request_bytes = wire.encode_unmask_request(first_request)

    gone |= dropouts.before_consistency_check
    signatures = {}
    for p in sorted(first_request.survivors):
        if p in gone:
            continue
        request = wire.decode_unmask_request(download(p, request_bytes))
        signatures[p] = upload(p, clients[p].confirm_survivors(request))
    request_bytes = wire.encode_unmask_request(server.collect_confirmations(signatures))

    gone |= dropouts.before_unmask
    responses = {}
    for p in signatures:
        if p in gone:
            continue
        request = wire.decode_unmask_request(download(p, request_bytes))
        response = wire.encode_unmask_response(clients[p].unmask(request))
        responses[p] = wire.decode_unmask_response(upload(p, response))
    total = server.unmask(responses)
    return RoundResult(
        total=total,
        server=server,
        clients=clients,
        bytes_uploaded=up,
        bytes_downloaded=down,
    )

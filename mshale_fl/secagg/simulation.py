"""Run a whole round in one process, with chosen dropouts at each stage.

Used by the tests and by `benchmarks/secagg.py`; the federation code drives the same client and
server objects over Flower messages instead. Every message passes through its `wire` encoding, its
bytes are counted per partner, and (with `clock`) the seconds each party spends are counted too: a
partner's are its stage calls plus decoding what it receives and encoding what it sends, the
server's likewise, so the two add up to the whole round.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
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
    # With a `clock`: partner -> seconds spent on its side, and the server's seconds (else zeros).
    partner_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: float = 0.0


def make_identities(
    partner_ids: list[str] | tuple[str, ...],
) -> dict[str, Ed25519PrivateKey]:
    return {p: Ed25519PrivateKey.generate() for p in partner_ids}


def run_round(
    config: RoundConfig,
    inputs: Mapping[str, np.ndarray],
    dropouts: Dropouts = Dropouts(),
    identities: Mapping[str, Ed25519PrivateKey] | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> RoundResult:
    """Run every stage, passing each message through its wire encoding and counting its bytes.

    `clock` (e.g. `time.process_time`) turns on the per-party timing of `RoundResult`; key generation
    when a client is created counts for that partner. Raises `TooFewSurvivorsError` when the dropouts
    leave fewer than t partners.
    """
    identities = identities or make_identities(config.partner_ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    partner_seconds = dict.fromkeys(config.partner_ids, 0.0)
    server_seconds = [0.0]

    @contextmanager
    def timed(party: str | None) -> Iterator[None]:
        """Charge the enclosed work to a partner, or to the server when `party` is None."""
        if clock is None:
            yield
            return
        started = clock()
        try:
            yield
        finally:
            elapsed = clock() - started
            if party is None:
                server_seconds[0] += elapsed
            else:
                partner_seconds[party] += elapsed

    clients = {}
    for p in config.partner_ids:
        with timed(p):
            clients[p] = SecAggClient(p, identities[p], config, registry)
    with timed(None):
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

    sent_ads = {}
    for p, c in clients.items():
        if p not in gone:
            with timed(p):
                sent_ads[p] = upload(p, wire.encode_advertisement(c.advertise_keys()))
    with timed(None):
        ads = {p: wire.decode_advertisement(data) for p, data in sent_ads.items()}
        encoded_ads = {
            p: wire.encode_advertisement(a)
            for p, a in server.collect_advertisements(ads).items()
        }
        # Each partner gets its own and its neighbours' keys (all of them with the complete graph,
        # where one encoding serves everyone).
        key_lists: dict[str, bytes] = {}
        encoded_lists: dict[tuple[str, ...], bytes] = {}
        for p in ads:
            wanted = tuple(server.advertisements_for(p))
            if wanted not in encoded_lists:
                encoded_lists[wanted] = wire.encode_bytes_map({q: encoded_ads[q] for q in wanted})
            key_lists[p] = encoded_lists[wanted]

    gone |= dropouts.before_share_keys
    sent_outboxes = {}
    for p in ads:
        if p in gone:
            continue
        with timed(p):
            received = wire.decode_bytes_map(download(p, key_lists[p]))
            ads_for_p = {q: wire.decode_advertisement(a) for q, a in received.items()}
            outbox = wire.encode_bytes_map(clients[p].share_keys(ads_for_p))
            sent_outboxes[p] = upload(p, outbox)
    with timed(None):
        outboxes = {p: wire.decode_bytes_map(data) for p, data in sent_outboxes.items()}
        inboxes = server.relay_shares(outboxes)
        inbox_bytes = {p: wire.encode_bytes_map(inbox) for p, inbox in inboxes.items()}

    gone |= dropouts.before_masked_input
    sent_vectors = {}
    for p in inboxes:
        if p in gone:
            continue
        with timed(p):
            inbox = wire.decode_bytes_map(download(p, inbox_bytes[p]))
            y = wire.encode_vector(clients[p].mask_input(inbox, inputs[p]), bits)
            sent_vectors[p] = upload(p, y)
    with timed(None):
        masked = {p: wire.decode_vector_view(y, bits, d) for p, y in sent_vectors.items()}
        first_request = server.collect_masked_inputs(masked)
        request_bytes = wire.encode_unmask_request(first_request)

    gone |= dropouts.before_consistency_check
    signatures = {}
    for p in sorted(first_request.survivors):
        if p in gone:
            continue
        with timed(p):
            request = wire.decode_unmask_request(download(p, request_bytes))
            signatures[p] = upload(p, clients[p].confirm_survivors(request))
    with timed(None):
        request_bytes = wire.encode_unmask_request(server.collect_confirmations(signatures))

    gone |= dropouts.before_unmask
    sent_responses = {}
    for p in signatures:
        if p in gone:
            continue
        with timed(p):
            request = wire.decode_unmask_request(download(p, request_bytes))
            response = wire.encode_unmask_response(clients[p].unmask(request))
            sent_responses[p] = upload(p, response)
    with timed(None):
        responses = {
            p: wire.decode_unmask_response(data) for p, data in sent_responses.items()
        }
        total = server.unmask(responses)
    return RoundResult(
        total=total,
        server=server,
        clients=clients,
        bytes_uploaded=up,
        bytes_downloaded=down,
        partner_seconds=partner_seconds,
        server_seconds=server_seconds[0],
    )

"""A partner's side of secure aggregation: one protocol session per training round.

After local training the partner does not send its weights. It quantises its update (new weights
minus the global weights, clipped, weighted by its number of examples, which is appended to the
vector so it too is only ever summed) and starts a `SecAggClient` session with fresh round keys. The
stage messages (federation/secagg_protocol.py) then advance that session; the plaintext update is
dropped from memory as soon as it has been masked.

A repeated `train` for the same round (the server restarted) replaces the session: the old one's keys
are forgotten, so no later message can make it reveal anything, and the new one masks the same
cached update under new keys (releasing the same update twice costs no extra privacy). A `train`
delivered again within the same attempt (same round id: the connection was lost and the broker
returned the instruction) gets the same keys again: the server keeps the first reply it received,
and a session re-keyed behind its back could not take part in the round.

Identity: the partner's long-term Ed25519 key (secagg/identity.py) signs its round keys; the peers'
identity keys that the server forwards are checked against the ones pinned on first sight.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import ConfigRecord

from mshale_fl.errors import UserFacingError
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.logging import get_logger
from mshale_fl.secagg import wire
from mshale_fl.secagg.errors import SecAggError
from mshale_fl.secagg.identity import PinnedPeers, load_or_create_identity, public_key_bytes
from mshale_fl.secagg.protocol import RoundConfig, SecAggClient
from mshale_fl.secagg.quantize import quantize_update

log = get_logger(__name__)

KEPT_SESSIONS = 4
"""Sessions kept at once: a partner takes part in one round at a time; older ones are abandoned rounds."""


class SecureAggregationRefused(UserFacingError):
    """The partner will not continue this secure-aggregation round (the reason says why)."""


@dataclass
class _Session:
    round_key: str
    config: RoundConfig
    client: SecAggClient
    registry: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    vector: np.ndarray | None = None
    advertisement: ConfigRecord | None = None


class SecAggParticipant:
    def __init__(self, partner_id: str, home: Path) -> None:
        self.partner_id = partner_id
        self.identity = load_or_create_identity(home, partner_id)
        self.identity_public_key = public_key_bytes(self.identity)
        self.pins = PinnedPeers(home, partner_id)
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self._lock = threading.Lock()

    # -- stage 1: advertise keys (answering `train`) ----------------------------------------------

    def start(self, round_key: str, record: ConfigRecord, update: np.ndarray, num_examples: int) -> ConfigRecord:
        """Open the session for this round (replacing an earlier one) and return the signed round keys."""
        try:
            config, quantization = s.parse_round_record(record, self.partner_id, vector_length=update.size + 1)
            vector = quantize_update(update, num_examples, quantization)
        except (s.SecAggConfigError, ValueError) as error:
            raise SecureAggregationRefused(f"secure aggregation refused: {error}") from None
        with self._lock:
            existing = self._sessions.get(config.round_id)
        if existing is not None and existing.round_key == round_key and existing.advertisement is not None:
            return ConfigRecord(dict(existing.advertisement))  # the same attempt, delivered again: the same keys
        # The registry is filled at the share-keys stage, when the server sends the peers' identity keys.
        registry: dict[str, Ed25519PublicKey] = {}
        session = _Session(round_key, config, SecAggClient(self.partner_id, self.identity, config, registry), registry, vector)
        advertisement = session.client.advertise_keys()
        session.advertisement = ConfigRecord({s.ROUND_ID: config.round_id, s.ADVERTISEMENT: wire.encode_advertisement(advertisement)})
        with self._lock:
            for old_id in [i for i, old in self._sessions.items() if old.round_key == round_key]:
                del self._sessions[old_id]
            self._sessions[config.round_id] = session
            while len(self._sessions) > KEPT_SESSIONS:
                self._sessions.popitem(last=False)
        log.info(
            "partner.secagg_started",
            partner_id=self.partner_id,
            round=round_key,
            cohort=len(config.partner_ids),
            threshold=config.threshold,
            neighbours=config.neighbours,
        )
        return session.advertisement

    # -- stages 2-5 ------------------------------------------------------------------------------

    def share_keys(self, record: ConfigRecord) -> ConfigRecord:
        session = self._session(record)
        try:
            registry_raw = wire.decode_bytes_map(_bytes(record, s.REGISTRY))
            if registry_raw.get(self.partner_id) != self.identity_public_key:
                raise SecureAggregationRefused(
                    "the server did not forward this partner's own registered identity key; refusing the round"
                )
            session.registry.update(self.pins.check_and_pin(registry_raw))
            advertisements = {
                partner: wire.decode_advertisement(data)
                for partner, data in wire.decode_bytes_map(_bytes(record, s.ADVERTISEMENTS)).items()
            }
            outbox = session.client.share_keys(advertisements)
        except (SecAggError, ValueError) as error:
            self._abandon(session)
            raise SecureAggregationRefused(f"secure aggregation, share keys: {error}") from None
        return self._reply(session, {s.OUTBOX: wire.encode_bytes_map(outbox)})

    def masked_input(self, record: ConfigRecord) -> ConfigRecord:
        session = self._session(record)
        if session.vector is None:
            raise SecureAggregationRefused("this round's update was already masked once; it is never masked twice")
        try:
            inbox = wire.decode_bytes_map(_bytes(record, s.INBOX))
            masked = session.client.mask_input(inbox, session.vector)
        except (SecAggError, ValueError) as error:
            self._abandon(session)
            raise SecureAggregationRefused(f"secure aggregation, masked input: {error}") from None
        finally:
            session.vector = None  # the plaintext update is not needed any more, whatever happened
        return self._reply(session, {s.MASKED: wire.encode_vector(masked, session.config.modulus_bits)})

    def confirm(self, record: ConfigRecord) -> ConfigRecord:
        session = self._session(record)
        try:
            signature = session.client.confirm_survivors(wire.decode_unmask_request(_bytes(record, s.REQUEST)))
        except (SecAggError, ValueError) as error:
            self._abandon(session)
            raise SecureAggregationRefused(f"secure aggregation, consistency check: {error}") from None
        return self._reply(session, {s.SIGNATURE: signature})

    def unmask(self, record: ConfigRecord) -> ConfigRecord:
        session = self._session(record)
        try:
            response = session.client.unmask(wire.decode_unmask_request(_bytes(record, s.REQUEST)))
        except (SecAggError, ValueError) as error:
            raise SecureAggregationRefused(f"secure aggregation, unmasking: {error}") from None
        finally:
            self._abandon(session)  # a session answers unmasking at most once, whatever happened
        log.info("partner.secagg_unmasked", partner_id=self.partner_id, round=session.round_key)
        return self._reply(session, {s.RESPONSE: wire.encode_unmask_response(response)})

    # -- helpers ---------------------------------------------------------------------------------

    def _session(self, record: ConfigRecord) -> _Session:
        round_id = _bytes(record, s.ROUND_ID)
        with self._lock:
            session = self._sessions.get(round_id)
        if session is None:
            raise SecureAggregationRefused(
                "no secure-aggregation session for this round here (it was replaced by a newer attempt, "
                "finished, or this partner restarted); this partner has dropped out of it"
            )
        return session

    def _abandon(self, session: _Session) -> None:
        with self._lock:
            self._sessions.pop(session.config.round_id, None)

    @staticmethod
    def _reply(session: _Session, values: dict[str, bytes]) -> ConfigRecord:
        return ConfigRecord({s.ROUND_ID: session.config.round_id, **values})


def _bytes(record: ConfigRecord, key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise SecureAggregationRefused(f"the secure-aggregation message lacks its {key!r} bytes")
    return value


def flatten_update(new: list[np.ndarray], old: list[np.ndarray]) -> np.ndarray:
    """New weights minus global weights, every tensor in model order, as one float64 vector."""
    return np.concatenate(
        [(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).ravel() for a, b in zip(new, old, strict=True)]
    )


__all__ = ["KEPT_SESSIONS", "SecAggParticipant", "SecureAggregationRefused", "flatten_update"]

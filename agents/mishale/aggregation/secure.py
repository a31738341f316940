"""Secure aggregation over Flower messages (Bonawitz et al. 2017, optional SecAgg+ graph): the default for Tier 3.

The protocol itself is `mshale_fl.secagg`; this module drives its server side over the grid, one
stage at a time (the message table is in federation/secagg_protocol.py):

1. `train` carries the round parameters; each reply carries signed round keys instead of weights. The
   server checks each signature against the partner's registered identity key (ledger/identities.py),
   so a substitution on the way is caught here as well as by the partners.
2. `share_keys` -> 3. `masked_input` -> 4. `confirm` -> 5. `unmask`, each to the partners still in,
   each with `SecAggSettings.stage_timeout`; a partner that errs, is silent or sends something
   malformed drops out at that stage.

The round fails without unmasking anything when fewer than t partners (or fewer than `min-clients`
masked updates) remain; the protocol guarantees the shares revealed before that point expose no one.
Each masked update gets an `update.masked` event with the SHA-256 of the masked bytes received: the
server never holds a partner's plain update, only the sum it unmasks. That sum is of
example-weighted, clipped, quantised updates plus the total number of examples; the new global
weights are the old ones plus sum / total.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from mshale_fl.agents.mishale.aggregation.base import (
    Aggregation,
    RoundAggregation,
    RoundResult,
    TrainingRound,
    check_train_reply,
    reported_epsilon,
)
from mshale_fl.agents.mishale.identities import IdentityRegistry
from mshale_fl.federation import protocol as p
from mshale_fl.federation import secagg_protocol as s
from mshale_fl.logging import get_logger
from mshale_fl.secagg import wire
from mshale_fl.secagg.errors import SecAggError, TooFewSurvivorsError
from mshale_fl.secagg.keys import KeyAdvertisement, verify_advertisement
from mshale_fl.secagg.protocol import RoundConfig, SecAggServer, UnmaskResponse
from mshale_fl.secagg.quantize import dequantize_sum

log = get_logger(__name__)


class SecureAggregation(Aggregation):
    name = "secagg"

    def __init__(self, settings: s.SecAggSettings, identities: IdentityRegistry) -> None:
        self.settings = settings
        self.identities = identities

    def begin(self, training_round: TrainingRound) -> RoundAggregation:
        return _SecureRound(self.settings, self.identities, training_round)


class _StageFailed(Exception):
    pass


class _SecureRound(RoundAggregation):
    def __init__(self, settings: s.SecAggSettings, identities: IdentityRegistry, training_round: TrainingRound) -> None:
        self.settings = settings
        self.round = training_round
        self.partners = {node: reserved.partner_id for node, reserved in training_round.cohort.items()}
        self.nodes = {partner: node for node, partner in self.partners.items()}
        cohort = sorted(self.partners.values())
        vector_length = sum(int(np.prod(training_round.arrays[k].shape)) for k in training_round.arrays.keys()) + 1
        # A fresh id per attempt: a round run again after a server restart uses new keys throughout.
        round_id = hashlib.sha256(
            f"mshale-fl secagg/{training_round.run_id}/{training_round.server_round}/".encode() + os.urandom(16)
        ).digest()
        self.config: RoundConfig = settings.round_config(round_id, cohort, vector_length)
        self.identity_keys = identities.keys(cohort)
        self.contributors: list[str] = []
        """Partners that trained and sent the most advanced step reached: round keys, then masked updates."""
        self.metrics: dict[str, float] = {
            "secagg_threshold": float(self.config.threshold),
            "secagg_neighbours": float(self.config.neighbours or len(cohort) - 1),
        }
        log.info(
            "server.secagg_round",
            round=training_round.server_round,
            cohort=cohort,
            threshold=self.config.threshold,
            neighbours=self.config.neighbours,
            modulus_bits=self.config.modulus_bits,
            clip=settings.clip,
            stage_timeout_s=settings.stage_timeout,
            vector_length=vector_length,
        )

    def train_records(self) -> RecordDict:
        return RecordDict({s.SECAGG_RECORD: s.round_record(self.config, self.settings.quantization)})

    # -- the stages --------------------------------------------------------------------------------

    def finish(self, replies: list[Message]) -> RoundResult:
        server = SecAggServer(self.config)
        epsilons: dict[str, float] = {}
        events = []
        try:
            advertisements = self._advertisements(replies, epsilons)
            self.metrics["secagg_advertised"] = float(len(advertisements))
            self.contributors = sorted(advertisements)
            broadcast = server.collect_advertisements(advertisements)
            # Each partner gets only its own and its neighbours' keys (all of them with the complete graph).
            share_keys = self._stage(
                s.SHARE_KEYS_MESSAGE_TYPE,
                {
                    partner: {
                        s.ADVERTISEMENTS: wire.encode_bytes_map(
                            {q: wire.encode_advertisement(ad) for q, ad in server.advertisements_for(partner).items()}
                        ),
                        s.REGISTRY: wire.encode_bytes_map(
                            {q: self.identity_keys[q] for q in server.advertisements_for(partner)}
                        ),
                    }
                    for partner in broadcast
                },
            )
            outboxes = self._decode(share_keys, "shares", lambda r: wire.decode_bytes_map(_field(r, s.OUTBOX)))
            self.metrics["secagg_shared"] = float(len(outboxes))
            inboxes = server.relay_shares(outboxes)
            masked_replies = self._stage(
                s.MASKED_INPUT_MESSAGE_TYPE, {partner: {s.INBOX: wire.encode_bytes_map(inbox)} for partner, inbox in inboxes.items()}
            )
            bits, length = self.config.modulus_bits, self.config.vector_length
            masked_bytes = {partner: _field(record, s.MASKED) for partner, record in masked_replies.items()}
            masked = self._decode(masked_replies, "masked input", lambda r: wire.decode_vector_view(_field(r, s.MASKED), bits, length))
            for partner in sorted(masked):
                digest = hashlib.sha256(masked_bytes[partner]).hexdigest()
                reserved = self.round.cohort[self.nodes[partner]]
                events.append(self.round.update_event(partner, digest, epsilons[partner], reserved.delta))
            self.metrics["secagg_masked"] = float(len(masked))
            self.contributors = sorted(masked)
            request = server.collect_masked_inputs(masked)
            if len(request.survivors) < self.round.min_clients:
                raise _StageFailed(
                    f"{len(request.survivors)} masked updates, fewer than min-clients {self.round.min_clients}; "
                    "nothing was unmasked"
                )
            encoded_request = wire.encode_unmask_request(request)
            confirmations = self._stage(s.CONFIRM_MESSAGE_TYPE, {partner: {s.REQUEST: encoded_request} for partner in request.survivors})
            signatures = self._decode(confirmations, "confirmation", lambda r: _field(r, s.SIGNATURE))
            self.metrics["secagg_confirmed"] = float(len(signatures))
            request = server.collect_confirmations(signatures)
            encoded_request = wire.encode_unmask_request(request)
            unmask_replies = self._stage(s.UNMASK_MESSAGE_TYPE, {partner: {s.REQUEST: encoded_request} for partner in signatures})
            responses: dict[str, UnmaskResponse] = self._decode(
                unmask_replies, "unmasking", lambda r: wire.decode_unmask_response(_field(r, s.RESPONSE))
            )
            self.metrics["secagg_unmasked"] = float(len(responses))
            total = server.unmask(responses)
        except (TooFewSurvivorsError, _StageFailed) as error:
            return self._failed(str(error), events)
        except SecAggError as error:
            return self._failed(f"secure aggregation failed: {error}", events)
        participants = sorted(server.masked_inputs)
        aggregated = dequantize_sum(total, self.settings.quantization)
        if aggregated.total_examples < 1:
            return self._failed("the unmasked example count is not positive", events)
        mean_update = aggregated.weighted_mean
        self.metrics["num_examples"] = float(aggregated.total_examples)
        self.metrics["epsilon_spent_max"] = max(epsilons[p_] for p_ in participants)
        return RoundResult(participants, self._apply(mean_update), self.metrics, events)

    def _advertisements(self, replies: list[Message], epsilons: dict[str, float]) -> dict[str, KeyAdvertisement]:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        advertisements: dict[str, KeyAdvertisement] = {}
        for reply in replies:
            reserved = self.round.cohort.get(reply.metadata.src_node_id)
            if reserved is None:
                continue
            partner = reserved.partner_id
            problem = check_train_reply(self.round, reply, reserved)
            if problem is None:
                try:
                    record = reply.content.config_records[s.SECAGG_RECORD]
                    if record.get(s.ROUND_ID) != self.config.round_id:
                        raise ValueError("the keys are for another round")
                    advertisement = wire.decode_advertisement(_field(record, s.ADVERTISEMENT))
                    if advertisement.partner_id != partner:
                        raise ValueError(f"the keys are advertised for {advertisement.partner_id!r}")
                    registered = self.identity_keys.get(partner)
                    if registered is None:
                        raise ValueError("the partner has no registered identity key")
                    verify_advertisement(advertisement, self.config.round_id, Ed25519PublicKey.from_public_bytes(registered))
                except (KeyError, ValueError, SecAggError) as error:
                    problem = f"round keys refused: {error}"
            if problem is not None:
                log.warning("server.dropout", round=self.round.server_round, stage="advertise keys", partner_id=partner, reason=problem[:300])
                continue
            advertisements[partner] = advertisement
            epsilons[partner] = reported_epsilon(reply)
        return advertisements

    def _stage(self, message_type: str, payloads: dict[str, dict[str, bytes]]) -> dict[str, ConfigRecord]:
        """Send one stage's message to each partner named; the well-formed replies by partner."""
        self.round.check_stop()
        messages = [
            Message(
                RecordDict({s.SECAGG_RECORD: ConfigRecord({s.ROUND_ID: self.config.round_id, **values})}),
                self.nodes[partner],
                message_type,
                group_id=str(self.round.server_round),
                ttl=self.settings.stage_timeout,
            )
            for partner, values in sorted(payloads.items())
        ]
        received: dict[str, ConfigRecord] = {}
        for reply in self.round.grid.send_and_receive(messages, timeout=self.settings.stage_timeout):
            partner = self.partners.get(reply.metadata.src_node_id)
            if partner is None or partner not in payloads:
                continue
            problem = None
            if reply.has_error():
                problem = f"error reply: {reply.error.reason}"
            elif self.round.participants.partner_of(reply.metadata.src_node_id, p.reported_partner(reply)) != partner:
                problem = "the reply does not come from the partner it was sent to"
            else:
                record = reply.content.config_records.get(s.SECAGG_RECORD)
                if record is None or record.get(s.ROUND_ID) != self.config.round_id:
                    problem = "the reply is not for this round's secure aggregation"
            if problem is not None:
                log.warning("server.dropout", round=self.round.server_round, stage=message_type, partner_id=partner, reason=problem[:300])
                continue
            received[partner] = record
        self.round.check_stop()
        silent = sorted(set(payloads) - set(received))
        log.info("server.secagg_stage", round=self.round.server_round, stage=message_type, replied=len(received), dropped=silent)
        return received

    def _decode(self, records: dict[str, ConfigRecord], what: str, decode):  # type: ignore[no-untyped-def]
        decoded = {}
        for partner, record in records.items():
            try:
                decoded[partner] = decode(record)
            except (ValueError, KeyError, SecAggError) as error:
                log.warning("server.dropout", round=self.round.server_round, stage=what, partner_id=partner, reason=f"malformed {what}: {error}"[:300])
        return decoded

    def _apply(self, mean_update: np.ndarray) -> ArrayRecord:
        arrays, offset, new = self.round.arrays, 0, {}
        for key in arrays.keys():
            current = arrays[key].numpy()
            size = int(current.size)
            step = mean_update[offset : offset + size].reshape(current.shape)
            new[key] = (current.astype(np.float64) + step).astype(current.dtype)
            offset += size
        return ArrayRecord(array_dict={k: Array(v) for k, v in new.items()})

    def _failed(self, reason: str, events: list) -> RoundResult:  # type: ignore[type-arg]
        log.warning("server.secagg_failed", round=self.round.server_round, reason=reason[:300])
        return RoundResult(self.contributors, None, self.metrics, events, reason)


def _field(record: ConfigRecord, key: str) -> bytes:
    value = record.get(key)
    if not isinstance(value, bytes):
        raise ValueError(f"the reply lacks its {key!r} bytes")
    return value


__all__ = ["SecureAggregation"]

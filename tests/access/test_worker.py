"""The predict worker on the real broker: each tier gets exactly its access, every decision is in the audit log."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import aio_pika
import pytest
from sqlalchemy import update

from mshale_fl.access.client import AccessClient, DownloadedFile, open_access_client
from mshale_fl.access.policy import AccessAction, AccessPolicy, usage_today
from mshale_fl.access.pull import verify_download
from mshale_fl.broker import DEAD_LETTER_QUEUE, EVENTS_EXCHANGE, connect
from mshale_fl.broker.consumer import DETAIL_HEADER, REASON_HEADER
from mshale_fl.ledger.tables import agreements
from mshale_fl.schemas.events import parse_event
from mshale_fl.testing.broker import eventually, take

from .world import AccessWorld, Lab, spec_request, vector_request

pytestmark = pytest.mark.rabbitmq

ACTIONS = list(AccessAction)


async def attempt_everything(client: AccessClient, lab: Lab, version: int) -> dict[AccessAction, Any]:
    """Try every action once; the answer (event or download reply) per action."""
    spec, vector, batch = spec_request(lab), vector_request(lab), spec_request(lab, count=2, seed=10)
    outcomes = await client.predict([spec, vector, batch], timeout=30)
    download = await client.download(version, timeout=30)
    return {
        AccessAction.PREDICT_SPEC: outcomes[0].answer,
        AccessAction.PREDICT_VECTORS: outcomes[1].answer,
        AccessAction.PREDICT_BATCH: outcomes[2].answer,
        AccessAction.MODEL_DOWNLOAD: download,
    }


def granted(answer: Any) -> bool:
    if isinstance(answer, DownloadedFile):
        return True
    assert answer is not None, "no answer"
    return getattr(answer, "type", None) == "prediction.ready"


def denial_codes(answer: Any) -> list[str]:
    if hasattr(answer, "denial"):  # a download reply
        return [reason.code for reason in answer.denial.reasons]
    assert answer.type == "access.denied", answer
    return [reason.code for reason in answer.payload.reasons]


async def test_each_tier_gets_exactly_its_access_and_every_decision_is_audited(world: AccessWorld) -> None:
    tier1, tier2, tier3, outsider = world.register(1), world.register(2), world.register(3), world.register(3)
    for lab in (tier1, tier2, tier3, outsider):
        world.contribute(lab)
    sha = world.save_model(1, parent=0)
    world.train(1, [tier3])
    async with world.running():
        published = await world.announce(1, sha, parent=0)
        answers = {}
        for lab in (tier1, tier2, tier3, outsider):
            async with open_access_client(lab.api_key, world.broker_url) as client:
                answers[lab.id] = await attempt_everything(client, lab, 1)
        await eventually(lambda: _all_logged(world, answers), timeout=30)

    allowed = {lab.tier if lab is not outsider else "outsider": {a for a in ACTIONS if granted(answers[lab.id][a])}
               for lab in (tier1, tier2, tier3, outsider)}  # fmt: skip
    assert allowed[1] == {AccessAction.PREDICT_SPEC}
    assert allowed[2] == {AccessAction.PREDICT_SPEC, AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH}
    assert allowed[3] == set(ACTIONS)
    # A Tier 3 partner that did not train version 1 gets everything but that download.
    assert allowed["outsider"] == set(ACTIONS) - {AccessAction.MODEL_DOWNLOAD}

    for action in (AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH, AccessAction.MODEL_DOWNLOAD):
        assert "tier.insufficient" in denial_codes(answers[tier1.id][action])
    tier2_download = denial_codes(answers[tier2.id][AccessAction.MODEL_DOWNLOAD])
    assert tier2_download == ["tier.insufficient", "contribution.none", "model.not_contributed"]
    outsider_denial = answers[outsider.id][AccessAction.MODEL_DOWNLOAD]
    assert denial_codes(outsider_denial) == ["model.not_contributed"]
    assert "helped train" in outsider_denial.denial.remedy

    ready = answers[tier1.id][AccessAction.PREDICT_SPEC]
    assert ready.payload.model_version == 1 and len(ready.payload.predictions) == 1
    assert 0.0 <= ready.payload.predictions[0].efficiency <= 1.0
    assert ready.payload.predictions[0].item_hash == spec_request(tier1).payload.specs[0].content_hash
    assert len(answers[tier2.id][AccessAction.PREDICT_BATCH].payload.predictions) == 2

    # The tier 3 download is the registered model, proven by the audit log.
    pulled = verify_download(answers[tier3.id][AccessAction.MODEL_DOWNLOAD], world.signer.verifier, requested=1)
    assert pulled.sha256 == sha and pulled.published_event.event_id == published.event_id
    assert set(pulled.card.contributors) == {tier3.id}

    # Charged: one spec for tier 1 (the denied requests charge nothing), 1 + 1 + 2 for tier 2.
    with world.engine.connect() as connection:
        today = datetime.now(UTC).date()
        assert usage_today(connection, tier1.id, today) == 1
        assert usage_today(connection, tier2.id, today) == 4


def _all_logged(world: AccessWorld, answers: dict[str, dict[AccessAction, Any]]) -> bool:
    """Every answer event and its request are in the log; each download decision too (by partner and type)."""
    logged = world.logged_types()
    decisions = {(record.partner_id, record.event_type) for record in world.logged_records()}
    for lab_id, by_action in answers.items():
        for action, answer in by_action.items():
            if action is AccessAction.MODEL_DOWNLOAD:
                expected = "access.granted" if isinstance(answer, DownloadedFile) else "access.denied"
                if (lab_id, expected) not in decisions:
                    return False
                continue
            if logged.get(answer.event_id) != answer.type:
                return False
            if logged.get(answer.causation_id) != "prediction.requested":
                return False
    return True


async def test_an_expired_agreement_and_an_exhausted_quota_are_denied_with_their_reasons(world: AccessWorld) -> None:
    policy = AccessPolicy(daily_items=MappingProxyType({1: 2, 2: 50, 3: 50}))
    tier1, tier2 = world.register(1), world.register(2)
    world.contribute(tier1)
    world.contribute(tier2)
    with world.engine.begin() as connection:  # the DPA ran out yesterday
        connection.execute(
            update(agreements)
            .where(agreements.c.partner_id == tier2.id)
            .values(
                valid_from=(datetime.now(UTC) - timedelta(days=30)).date(),
                valid_until=(datetime.now(UTC) - timedelta(days=1)).date(),
            )
        )
    sha = world.save_model(1)
    async with world.running(policy=policy):
        await world.announce(1, sha)
        async with open_access_client(tier1.api_key, world.broker_url) as client:
            first = await client.predict([spec_request(tier1, seed=n) for n in range(2)], timeout=30)
            third = (await client.predict([spec_request(tier1, seed=7)], timeout=30))[0].answer
        async with open_access_client(tier2.api_key, world.broker_url) as client:
            vectors, spec = await client.predict([vector_request(tier2), spec_request(tier2)], timeout=30)
            listing = await client.list_models(timeout=30)

    assert [outcome.answer.type for outcome in first] == ["prediction.ready", "prediction.ready"]
    assert third.type == "access.denied" and denial_codes(third) == ["quota.exhausted"]
    assert "the daily quota is 2 predictions; 0 remain today" in third.payload.reasons[0].message
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert f"wait until {tomorrow}T00:00:00+00:00 or move to Tier 2" in third.payload.remedy

    assert denial_codes(vectors.answer) == ["agreement.expired"]
    assert "expired on" in vectors.answer.payload.reasons[0].message
    assert "renew the DPA" in vectors.answer.payload.remedy
    assert spec.answer.type == "prediction.ready"  # Tier 1 access needs no agreement
    by_action = {action.action: action for action in listing.actions}
    assert by_action["predict.spec"].allowed and by_action["predict.spec"].quota_remaining == 49
    assert not by_action["predict.vectors"].allowed
    assert [reason.code for reason in by_action["predict.vectors"].reasons] == ["agreement.expired"]
    with world.engine.connect() as connection:
        assert usage_today(connection, tier1.id, datetime.now(UTC).date()) == 2


async def test_the_same_request_sent_twice_is_answered_once_and_charged_once(world: AccessWorld) -> None:
    lab = world.register(1)
    world.contribute(lab)
    sha = world.save_model(1)
    async with world.running():
        await world.announce(1, sha)
        request = spec_request(lab)
        async with open_access_client(lab.api_key, world.broker_url) as client:
            first = (await client.predict([request], timeout=30))[0].answer
            again = (await client.predict([request], timeout=30))[0].answer
    assert first.type == "prediction.ready" and again == first
    with world.engine.connect() as connection:
        assert usage_today(connection, lab.id, datetime.now(UTC).date()) == 1


async def test_a_stale_request_and_a_request_without_a_verified_sender_charge_nothing(world: AccessWorld) -> None:
    lab = world.register(1)
    world.contribute(lab)
    sha = world.save_model(1)
    async with world.running(max_request_age=5):
        await world.announce(1, sha)
        old = spec_request(lab).model_copy(update={"occurred_at": datetime.now(UTC) - timedelta(seconds=60)})
        async with open_access_client(lab.api_key, world.broker_url) as client:
            stale = (await client.predict([old], timeout=30))[0].answer
        # Mishale's own broker user (guest) asking in the partner's name: the broker checks user_id = guest.
        forged = spec_request(lab)
        guest = await connect(world.broker_url, name="test forger", robust=False)
        try:
            answer = await _raw_request(guest, forged.routing_key, forged.model_dump_json().encode(), user_id="guest")
        finally:
            await guest.close()
    assert denial_codes(stale) == ["request.stale"]
    assert "nothing was charged" in stale.payload.reasons[0].message
    mismatch = parse_event(answer)
    assert denial_codes(mismatch) == ["sender.mismatch"]
    with world.engine.connect() as connection:
        assert usage_today(connection, lab.id, datetime.now(UTC).date()) == 0


async def _raw_request(connection: Any, routing_key: str, body: bytes, *, user_id: str, timeout: float = 20) -> bytes:
    """Publish `body` with a direct reply-to and return the reply's body."""
    channel = await connection.channel(publisher_confirms=True)
    replies: asyncio.Queue[bytes] = asyncio.Queue()
    queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)

    async def on_reply(message: Any) -> None:
        await replies.put(message.body)

    await queue.consume(on_reply, no_ack=True)
    exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
    await exchange.publish(
        aio_pika.Message(body, content_type="application/json", reply_to="amq.rabbitmq.reply-to",
                         correlation_id=uuid.uuid4().hex, user_id=user_id),
        routing_key=routing_key,
    )  # fmt: skip
    try:
        return await asyncio.wait_for(replies.get(), timeout=timeout)
    finally:
        await channel.close()


async def test_malformed_requests_are_dead_lettered_with_their_reason_and_the_worker_keeps_serving(
    world: AccessWorld,
) -> None:
    lab = world.register(1)
    world.contribute(lab)
    sha = world.save_model(1)
    from mshale_fl.ledger import broker_password
    from mshale_fl.testing.rabbitmq import amqp_url

    partner_url = amqp_url(world.vhost, lab.id, broker_password(lab.api_key))
    async with world.running():
        await world.announce(1, sha)
        partner = await connect(partner_url, name="test partner", robust=False)
        try:
            key = f"{lab.id}.prediction.requested"
            garbage = await _raw_request(partner, key, b"\x00 not json {", user_id=lab.id)
            short = json.loads(vector_request(lab).model_dump_json())
            short["payload"]["vectors"][0]["values"] = [0.5, 0.5, 0.5]
            invalid = await _raw_request(partner, key, json.dumps(short).encode(), user_id=lab.id)
        finally:
            await partner.close()
        async with open_access_client(lab.api_key, world.broker_url) as client:
            after = (await client.predict([spec_request(lab)], timeout=30))[0].answer
        mishale = await connect(world.broker_url, name="test dead letters", robust=False)
        try:
            dead = await take(mishale, DEAD_LETTER_QUEUE, 4, timeout=20)
        finally:
            await mishale.close()

    assert after.type == "prediction.ready"  # still serving
    garbage_denial, invalid_denial = parse_event(garbage), parse_event(invalid)
    assert garbage_denial.type == "access.denied" and garbage_denial.payload.request_id == uuid.UUID(int=0)
    assert invalid_denial.payload.request_id == uuid.UUID(short["event_id"])
    assert [(r.code, r.field) for r in invalid_denial.payload.reasons] == [("vector.length", "vectors[0].values")]
    from_predict = [m for m in dead if (m.headers or {}).get("x-mshale-queue") == "mshale.predict"]
    assert len(from_predict) == 2
    assert {m.headers[REASON_HEADER] for m in from_predict} == {"invalid_event"}
    assert any("values" in str(m.headers[DETAIL_HEADER]) for m in from_predict)
    with world.engine.connect() as connection:
        assert usage_today(connection, lab.id, datetime.now(UTC).date()) == 1

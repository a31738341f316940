"""Stream replay: every event, in publish order, from first, from an offset, from a timestamp."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pamqp.commands import Basic

from mshale_fl.broker import EVENTS_EXCHANGE, parse_start, replay, replay_records, tail_offset
from mshale_fl.testing.samples import sample_event

pytestmark = pytest.mark.rabbitmq


async def _collect(connection, start, **kwargs) -> list[tuple[int, str]]:
    return [(offset, str(event.event_id)) async for offset, event in replay(connection, start, **kwargs)]


async def test_replay_returns_every_event_in_publish_order_from_first_offset_and_time(connection, publisher) -> None:
    assert await tail_offset(connection) is None
    assert await _collect(connection, "first") == []  # empty stream: stops at once

    early = [sample_event(t, seed=i) for i, t in enumerate(["spec.submitted", "submission.accepted", "budget.low"] * 40)]
    await publisher.publish_many(early)
    await asyncio.sleep(1.1)  # the stream's timestamps have one-second resolution
    boundary = datetime.now(UTC)
    await asyncio.sleep(1.1)
    late = [sample_event("model.published", seed=i) for i in range(30)]
    await publisher.publish_many(late)
    published = [str(e.event_id) for e in early + late]

    from_first = await _collect(connection, "first")
    assert [event_id for _, event_id in from_first] == published
    offsets = [offset for offset, _ in from_first]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert await tail_offset(connection) == offsets[-1]

    from_offset = await _collect(connection, offsets[100])
    assert [event_id for _, event_id in from_offset] == published[100:]

    from_time = await _collect(connection, boundary)
    assert [event_id for _, event_id in from_time] == [str(e.event_id) for e in late]

    assert await _collect(connection, offsets[-1] + 10) == []  # past the tail: nothing, no hang


async def test_replay_skips_records_that_do_not_parse_but_records_show_them(connection, publisher) -> None:
    good = sample_event("budget.low")
    properties = Basic.Properties(message_id="junk", delivery_mode=2)
    await publisher.publish_raw(b"{oops", exchange=EVENTS_EXCHANGE, routing_key="lab-a.budget.low", properties=properties)
    await publisher.publish(good)
    assert [e.event_id for _, e in [item async for item in replay(connection, "first")]] == [good.event_id]
    records = [r async for r in replay_records(connection, "first")]
    assert [(r.offset, r.message_id) for r in records] == [(0, "junk"), (1, str(good.event_id))]


async def test_follow_keeps_waiting_for_new_events(connection, publisher) -> None:
    first = sample_event("budget.low", seed=1)
    await publisher.publish(first)
    seen: list[str] = []

    async def follow() -> None:
        async for _, event in replay(connection, "first", follow=True):
            seen.append(str(event.event_id))
            if len(seen) == 2:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(2.5)  # longer than the idle timeout: a non-following replay would have ended
    assert not follower.done()
    second = sample_event("budget.low", seed=2)
    await publisher.publish(second)
    await asyncio.wait_for(follower, timeout=10)
    assert seen == [str(first.event_id), str(second.event_id)]


def test_parse_start_reads_the_cli_forms() -> None:
    assert parse_start("first") == "first"
    assert parse_start("42") == 42
    assert parse_start("2026-01-02T03:04:05Z") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with pytest.raises(ValueError, match="UTC offset"):
        parse_start("2026-01-02T03:04:05")
    with pytest.raises(ValueError, match="--from must be"):
        parse_start("yesterday")

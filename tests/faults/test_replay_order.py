"""Racing publishers: the stream and the audit log may order them differently, and that is no mismatch.

RabbitMQ keeps order per channel and queue only. Partners publish on connections of their own, so
two submissions in flight at once can be enqueued in one order in the stream `mshale.events.log`
and in the other in `mshale.audit`, which the audit worker logs in queue order. The load
scenarios of this suite hit it (`audit replay` reported `reordered` on a healthy system); here it
is on its own: four publishers at once, the real audit worker, then the replay.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mshale_fl.agents.mishale.audit_replay import replay_audit
from mshale_fl.agents.mishale.audit_worker import AuditProcessor, serve_audit
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.broker import Publisher, connect, declare_topology, replay
from mshale_fl.config import Settings
from mshale_fl.testing.invariants import read_log
from mshale_fl.testing.samples import sample_event

pytestmark = [pytest.mark.faults, pytest.mark.rabbitmq]

PUBLISHERS = 4
EACH = 300


async def test_racing_publishers_ordered_differently_in_stream_and_log_still_match(broker_url: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "log")
    signer = NoteSigner.generate("mshale.test/order")
    connection = await connect(broker_url, name="order test")
    await declare_topology(connection, delivery_limit=5)
    processor = AuditProcessor(lambda: AuditAppender(store, signer, index_path=None))
    stop = asyncio.Event()
    worker = asyncio.create_task(
        serve_audit(processor, Settings(home=tmp_path, broker_url=broker_url), stop=stop, install_signal_handlers=False)
    )
    partners = [await connect(broker_url, name=f"partner {n}") for n in range(PUBLISHERS)]
    publishers = [await Publisher.open(partner, window=64) for partner in partners]
    try:
        async def publish(n: int) -> None:
            for seed in range(EACH):
                await publishers[n].publish(sample_event("spec.submitted", seed=seed, partner_id=f"lab-{n}"))

        await asyncio.gather(*(publish(n) for n in range(PUBLISHERS)))
        while len(read_log(store)) < PUBLISHERS * EACH:
            await asyncio.sleep(0.2)
        streamed = [event.event_id for _, event in [item async for item in replay(connection, "first")] if event.type != "audit.checkpoint"]
        logged = [record.event_uuid for record in read_log(store)]
        assert sorted(streamed) == sorted(logged)
        if streamed == logged:
            pytest.skip("the publishers did not race this time (no reordering to tolerate)")

        report = await replay_audit(connection, store, "first", grace=1)
        strict = await replay_audit(connection, store, "first", grace=1, reorder_window=0)
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=30)
        processor.close()
        for publisher, partner in zip(publishers, partners, strict=True):
            await publisher.close()
            await partner.close()
        await connection.close()
    assert report.ok and report.concurrent > 0, report.summary()
    assert report.compared == PUBLISHERS * EACH
    # Without the tolerance, the same honest log is a mismatch (what `audit replay` said before).
    assert strict.mismatch is not None and strict.mismatch.kind == "reordered"

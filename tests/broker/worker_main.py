"""A real worker process for the shutdown test: `python worker_main.py BROKER_URL SQLITE_PATH`.

Its handler takes 10 ms per event and writes one `effects` row in the inbox transaction.
"""

from __future__ import annotations

import asyncio
import sys
import time

from sqlalchemy import text

from mshale_fl.broker import InboxProcessor, run_worker
from mshale_fl.config import Settings
from mshale_fl.store import create_store_engine


class SlowHandler:
    consumer_name = "shutdown-test"

    def handle(self, event, connection):
        time.sleep(0.01)
        connection.execute(
            text("INSERT INTO effects (event_id, type) VALUES (:id, :t)"), {"id": str(event.event_id), "t": event.type}
        )
        return []


def main() -> None:
    broker_url, database = sys.argv[1], sys.argv[2]
    engine = create_store_engine(f"sqlite:///{database}")
    settings = Settings(broker_url=broker_url, prefetch=20)
    processor = InboxProcessor(SlowHandler(), engine)
    stats = asyncio.run(run_worker("ledger", processor, settings, shutdown_grace=5))
    processor.close()
    print(f"stopped acked={stats.acked} requeued={stats.requeued}", flush=True)


if __name__ == "__main__":
    main()

"""Run by test_crash_recovery.py in a separate process: append batches, then die with SIGKILL.

Usage: python crash_child.py <config.json>

The config names the store, key, index and events, the batches to append, and when to die:
`kill_before_write_number` counts store writes of this process (bundles and checkpoints, from
1); the process kills itself just before that write would start. The kill is a real SIGKILL:
no `finally`, no atexit, no flush, exactly like a container being OOM-killed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.keys import load_signing_key
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.stores.s3 import S3Store
from mshale_fl.schemas import parse_event


class DieBeforeWrite:
    def __init__(self, store: Any, kill_before: int | None) -> None:
        self.store = store
        self.kill_before = kill_before
        self.writes = 0

    @property
    def description(self) -> str:
        return self.store.description

    def put_immutable(self, key: str, data: bytes) -> None:
        self.writes += 1
        if self.kill_before is not None and self.writes >= self.kill_before:
            os.kill(os.getpid(), signal.SIGKILL)
        self.store.put_immutable(key, data)

    def get(self, key: str) -> bytes:
        return self.store.get(key)

    def list_keys(self, prefix: str) -> list[str]:
        return self.store.list_keys(prefix)

    def key_history(self, prefix: str) -> Any:
        return self.store.key_history(prefix)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    if config["store"] == "local":
        store: Any = LocalStore(config["dir"])
    else:
        store = S3Store(config["bucket"], region=config["region"], prefix=config["prefix"], endpoint_url=config["endpoint"])
    events = [parse_event(line) for line in Path(config["events"]).read_text().splitlines()]
    appender = AuditAppender(
        DieBeforeWrite(store, config.get("kill_before_write_number")),
        load_signing_key(config["key_file"]),
        index_path=config["index"],
        max_bundle_entries=config["max_bundle_entries"],
    )
    for start, end in config["batches"]:
        checkpoint = appender.append_batch(events[start:end])
        print(checkpoint.size, flush=True)


if __name__ == "__main__":
    main()

"""The appender killed mid-batch (SIGKILL in a child process) resumes with no gap and no duplicate.

The child appends batch 1 (events 0-9) and starts batch 2 (events 10-24) with bundles of at most
8 entries, so its store writes are: #1 checkpoint 0, #2-#3 bundles of batch 1, #4 checkpoint
10, #5-#6 bundles of batch 2, #7 checkpoint 25. It is killed just before write #5, #6 or #7.
Then, like the audit worker after a restart, the parent re-opens the log, receives batch 2
again (it was never acknowledged) and then batch 3 (events 25-29).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.keys import create_signing_key
from mshale_fl.audit.log import TransparencyLog
from mshale_fl.audit.receipts import verify_receipt
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.audit.verify import verify_log

from .audit_support import ORIGIN, S3_REGION, child_environment

CHILD = Path(__file__).with_name("crash_child.py")

# kill before write number -> entries durable in the store when the child dies
STORED_AT_CRASH = {5: 10, 6: 18, 7: 25}


@pytest.mark.parametrize(
    ("store_kind", "kill_before", "reuse_index"),
    [
        ("local", 7, True),
        ("local", 6, True),
        ("local", 5, True),
        ("local", 7, False),
        ("s3", 7, True),
        ("s3", 6, False),
    ],
    ids=lambda value: str(value),
)
def test_killed_appender_resumes_without_gap_or_duplicate(
    tmp_path: Path, make_events: Any, request: pytest.FixtureRequest, store_kind: str, kill_before: int, reuse_index: bool
) -> None:
    events = make_events(30)
    events_file = tmp_path / "events.jsonl"
    events_file.write_text("\n".join(event.model_dump_json() for event in events) + "\n")
    key_file = tmp_path / "signing.key"
    signer = create_signing_key(key_file, ORIGIN)
    config: dict[str, Any] = {
        "key_file": str(key_file),
        "index": str(tmp_path / "index.sqlite3"),
        "events": str(events_file),
        "batches": [[0, 10], [10, 25]],
        "max_bundle_entries": 8,
        "kill_before_write_number": kill_before,
    }
    if store_kind == "local":
        store: Any = LocalStore(tmp_path / "log")
        config.update(store="local", dir=str(store.root))
    else:
        store = request.getfixturevalue("worm_store")
        config.update(
            store="s3",
            bucket=store.bucket,
            region=S3_REGION,
            prefix=store.prefix,
            endpoint=request.getfixturevalue("moto_endpoint"),
        )
    config_file = tmp_path / "child.json"
    config_file.write_text(json.dumps(config))

    child = subprocess.run(
        [sys.executable, str(CHILD), str(config_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env=child_environment(),
        check=False,
    )
    assert child.returncode == -9, child.stderr  # killed by SIGKILL, not a clean exit or a traceback
    assert child.stdout.split() == ["10"]  # batch 1 was checkpointed and acknowledged, batch 2 was not

    # What the crash left behind: durable entries, the last checkpoint at 10.
    log = TransparencyLog(store)
    assert log.checkpoint_sizes()[-1] == 10
    stored = sum(len(log.read_bundle(start)) for start in log.bundle_starts())
    assert stored == STORED_AT_CRASH[kill_before]
    before = verify_log(store, signer.verifier)
    assert before.ok, before.summary()
    assert [w.kind for w in before.warnings] == (["unsigned_tail"] if stored > 10 else [])

    # The restart: same or fresh index, batch 2 redelivered, then batch 3.
    index_path = config["index"] if reuse_index else tmp_path / "fresh-index.sqlite3"
    with AuditAppender(store, signer, index_path=index_path, max_bundle_entries=8) as appender:
        assert appender.size == stored and appender.checkpoint.size == stored  # the tail was adopted and signed
        assert appender.append_batch(events[10:25]).size == 25
        final = appender.append_batch(events[25:30])
        assert final.size == 30
        for position, event in enumerate(events):
            assert appender.position_of(event.event_id) == position  # in order, once each, no gap
        for event in (events[0], events[17], events[24], events[29]):
            verify_receipt(appender.receipt(event.event_id), signer.verifier, event=event)

    after = verify_log(store, signer.verifier)
    assert after.ok and not after.warnings, after.summary()
    assert after.entries == 30 and after.verified_size == 30

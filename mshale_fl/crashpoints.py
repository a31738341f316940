"""Named crash points for fault tests: SIGKILL this process at an exact place. Off unless asked.

A fault test must kill a worker *between* two steps (its database commit and its ack, say), and a
signal sent from outside lands wherever the process happens to be. So the product calls
`crash_point(name)` at a few named places, and a process started with

    MSHALE_TEST_CRASH_AT=<name>[@<n>]

sends itself SIGKILL the n-th time (default: the first) it reaches `<name>`: no `finally`, no
atexit, no flush, no AMQP close; exactly what `kill -9` does. Before dying it writes one line,
`mshale-fl crash point <name> (hit <n>): SIGKILL`, to stderr, so a test can tell this death from
any other. Without the variable `crash_point` is one global lookup and a return.

| name | where (the effect is ... ) |
|---|---|
| `inbox.before_commit` | broker/inbox.py: handlers ran and inbox rows are inserted; COMMIT not sent (rolled back) |
| `consumer.after_process` | broker/consumer.py: applied (inbox committed, or log appended and signed); outputs not published, not acked |
| `consumer.before_ack` | broker/consumer.py: applied, outputs published and confirmed; ack not sent |
| `audit.before_checkpoint` | audit/appender.py: the batch's bundle is in the store, its signed checkpoint is not |
| `node.<message type>` | federation/node.py: a partner node received a grid instruction, before its ClientApp runs (e.g. `node.train.secagg_confirm`) |

Used by tests/faults/ (see its README); never set it in production. It lives in `mshale_fl`
itself, not in `broker/`, because the audit package must not import the broker.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["CRASH_AT_ENV", "crash_point"]

CRASH_AT_ENV = "MSHALE_TEST_CRASH_AT"


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.strip().partition("@")
    return name, int(count) if count else 1


_armed = _parse(os.environ.get(CRASH_AT_ENV))
_hits = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process here if MSHALE_TEST_CRASH_AT names this point and its hit count is reached."""
    if _armed is None or _armed[0] != name:
        return
    global _hits
    with _lock:  # inbox transactions run on a worker thread, consumer callbacks on the loop
        _hits += 1
        if _hits < _armed[1]:
            return
        sys.stderr.write(f"mshale-fl crash point {name} (hit {_hits}): SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)

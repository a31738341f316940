"""The partner agent (`mshale-fl agent run --config partner.toml`): a lab's contribution, kept up to date.

One asyncio loop, three duties:

- **Submitting.** Every `poll_seconds` the corpus is scanned (`watch.py`: polling, settled files
  only). Files that are new, changed, or whose outcome is out of date (the config's labels,
  agreements or tier changed; a receipt is missing after `retry_seconds`) go through one step of
  `contribute.py` — extract, plan, submit — in chunks of `batch_files`, and each file's outcome is
  written to the state (`agent_state.py`) at once. Unchanged files are never sent again, also not
  after a restart; a changed one is. What may leave is decided by the same code as `extract`,
  `inspect` and `submit`: `full-ip` never leaves in any form.
- **Auditing** (with `[audit] verifier_key`): the receipts of the events just sent are fetched and
  verified, and every `check_seconds` the witness follows the log (`audit_guard.py`). A fork or a
  rollback of Mishale's log halts the agent: it is logged at `critical`, recorded in the state (so
  a restart stays halted), nothing more is submitted, and the training node leaves. The daemon keeps
  running so `agent status` and the logs say why; `agent reset-witness` clears the halt once the
  matter is settled.
- **Training** (Tier 3): the `join` command's node — `PartnerNode` running the ClientApp of
  `client_app.py` on the partner's own broker user, its accountant and reply cache under `home` —
  runs beside the loop. Its training data is loaded when it joins; a corpus that has nothing to
  train on yet is tried again when the corpus changes.

Failures: a broker that is down or restarting makes a step fail without recording the files that
were to be sent; they are retried with back-off (1 s doubling to `retry_seconds`), each retry a new
connection. The training node's connection is robust and reconnects by itself. Every id sent is
derived from content, so whatever is sent twice is counted once.

Stopping (SIGTERM, SIGINT): the scan loop stops; a step that is sending gets `shutdown_grace`
seconds to finish and is abandoned after that (its files keep their old records and are sent
again at the next start); an extraction chunk in progress finishes first (a chunk is bounded by
`batch_files`); the training node finishes or abandons its instruction as in `join`; the state is
saved and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime
from typing import Any

from mshale_fl.agents.partner.agent_config import AgentConfig, shadowed_corpus_config
from mshale_fl.agents.partner.agent_state import (
    PENDING,
    AgentLock,
    AgentState,
    utc_now,
)
from mshale_fl.agents.partner.audit_guard import AuditFork, AuditGuard, Pending
from mshale_fl.agents.partner.batches import DEFAULT_BATCH_SIZE
from mshale_fl.agents.partner.contribute import Change, Prepared, outcomes, prepare
from mshale_fl.agents.partner.submit import SubmissionResult, partner_broker_url, submit_plan
from mshale_fl.agents.partner.watch import CorpusWatcher, Scan
from mshale_fl.errors import UserFacingError
from mshale_fl.logging import get_logger

log = get_logger(__name__)

STATE_HEARTBEAT_SECONDS = 60.0
"""The state is saved after every change, and at least this often so `agent status` shows a recent scan."""


class _Abandoned(Exception):
    """Sending was cut short by a stop request after the grace period."""


class PartnerDaemon:
    def __init__(self, config: AgentConfig, *, publish_window: int = 256) -> None:
        self.config = config
        self.publish_window = publish_window
        self.state_dir = config.state_dir
        self.lock = AgentLock(self.state_dir)
        self.state: AgentState | None = None
        self.guard: AuditGuard | None = None
        self.watcher = CorpusWatcher(config.corpus, settle_seconds=config.agent.settle_seconds)
        self._stop = asyncio.Event()
        self._training_stop = asyncio.Event()
        self._corpus_changed = asyncio.Event()
        self._broker_retry_at = 0.0
        self._backoff = 0.0
        self._next_audit_check = 0.0
        self._last_saved = 0.0
        self._caught_up = False
        self._corpus_missing = False

    # -- lifecycle -------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises `UserFacingError` for a state folder that cannot be used."""
        self._stop = stop
        self.lock.acquire()
        try:
            self.state = AgentState.load(self.state_dir, self.config.partner_id)
            if self.config.verifier is not None:
                self.guard = AuditGuard(self.state_dir, self.config.verifier, partner_id=self.config.partner_id,
                                        broker_url=self.config.broker_url, api_key=self.config.api_key,
                                        receipt_wait=self.config.audit.receipt_wait)  # fmt: skip
            self._started()
            training = asyncio.create_task(self._train_forever(), name="training") if self.config.tier == 3 else None
            try:
                while not stop.is_set():
                    await self._step()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.config.agent.poll_seconds)
            finally:
                self._training_stop.set()
                if training is not None:
                    await self._finish_training(training)
                self.state.daemon.update({"stopped_at": utc_now(), "pid": None})
                self.state.save()
                log.info("agent.stopped", partner_id=self.config.partner_id, **self.state.counts())
        finally:
            self.lock.release()

    def _started(self) -> None:
        assert self.state is not None
        config = self.config
        self.state.daemon = {
            "pid": os.getpid(),
            "started_at": utc_now(),
            "config": str(config.path),
            "corpus": str(config.corpus),
            "tier": config.tier,
            "submit_tier": config.submit_tier,
            "last_scan_at": None,
        }
        self.state.save()
        self._last_saved = time.monotonic()
        log.info("agent.started", partner_id=config.partner_id, corpus=str(config.corpus), tier=config.tier,
                 submits=("vectors" if config.submit_tier == 2 else "specs"), state=str(self.state_dir),
                 api_key_from=config.api_key_source, files_known=len(self.state.files),
                 watching=f"polling every {config.agent.poll_seconds:g} s")  # fmt: skip
        if self.guard is None:
            log.warning("agent.audit_not_verified", fix="set [audit] verifier_key to what `mshale-fl audit pubkey` prints")
        shadowed = shadowed_corpus_config(config)
        if shadowed is not None:
            log.warning("agent.corpus_config_ignored", file=str(shadowed),
                        detail=f"labels and agreements come from {config.path}")  # fmt: skip
        if self.state.halted:
            self._log_halted()

    def _log_halted(self) -> None:
        assert self.state is not None and self.state.halted is not None
        log.critical("agent.halted", **self.state.halted,
                     detail="nothing is submitted and no training is joined until `mshale-fl agent reset-witness`")  # fmt: skip

    # -- one step --------------------------------------------------------------------------------------

    async def _step(self) -> None:
        assert self.state is not None
        try:
            scan = await asyncio.to_thread(self.watcher.scan)
            dirty = self._forget_removed(scan)
            changes = self._changes(scan)
            processed = False
            if changes and not self.state.halted and time.monotonic() >= self._broker_retry_at:
                self._corpus_changed.set()
                size = self.config.agent.batch_files
                for start in range(0, len(changes), size):
                    if self._stop.is_set() or self.state.halted:
                        break
                    if not await self._contribute(changes[start : start + size]):
                        break
                    processed = True
                dirty = True
            if self.guard is not None and not self.state.halted and time.monotonic() >= self._next_audit_check:
                self._next_audit_check = time.monotonic() + self.config.audit.check_seconds
                dirty |= await self._audit(self.guard.due(self.state))
            self.state.daemon["last_scan_at"] = utc_now()
            if dirty or time.monotonic() - self._last_saved >= STATE_HEARTBEAT_SECONDS:
                self.state.save()
                self._last_saved = time.monotonic()
            if not self._caught_up and (not changes or processed) and not scan.unsettled:
                self._caught_up = True
                log.info("agent.caught_up", files=len(scan.present), **self.state.counts())
        except asyncio.CancelledError:
            raise
        except UserFacingError as error:
            log.error("agent.step_failed", error=str(error)[:500])
            self._back_off()
        except Exception as error:  # a bug or a full disk: keep the daemon alive, say what happened, slow down
            log.exception("agent.step_crashed", error=f"{type(error).__name__}: {error}"[:500])
            self._back_off()

    def _forget_removed(self, scan: Scan) -> bool:
        """Drop the records of files gone from the corpus (unless the corpus looks absent: a share not mounted)."""
        assert self.state is not None
        missing = not self.config.corpus.is_dir()
        if missing != self._corpus_missing:  # said once per change, not at every scan
            self._corpus_missing = missing
            if missing:
                log.warning("agent.corpus_missing", corpus=str(self.config.corpus), detail="waiting for it to come back")
            else:
                log.info("agent.corpus_back", corpus=str(self.config.corpus))
        if not scan.present:
            return False
        gone = [source for source in self.state.files if source not in scan.present]
        for source in gone:
            record = self.state.files.pop(source)
            log.info("agent.file_removed", source=source, was=record.status)
        return bool(gone)

    def _changes(self, scan: Scan) -> list[Change]:
        assert self.state is not None
        fingerprint = self.config.fingerprint
        retry_before = time.time() - self.config.agent.retry_seconds
        changes = []
        for source, (path, signature) in sorted(scan.settled.items()):
            record = self.state.files.get(source)
            if record is not None:
                if record.is_current(signature, fingerprint):
                    continue
                unchanged_pending = (record.status == PENDING and record.signature == signature
                                     and record.fingerprint == fingerprint)  # fmt: skip
                if unchanged_pending and datetime.fromisoformat(record.updated_at).timestamp() > retry_before:
                    continue
            changes.append(Change(source, path, signature))
        return changes

    async def _contribute(self, changes: list[Change]) -> bool:
        """One chunk: prepare, send, record. False if sending failed (the rest waits for the back-off)."""
        assert self.state is not None
        config = self.config
        prepared: Prepared = await asyncio.to_thread(
            prepare, changes, state_dir=self.state_dir, partner_config=config.partner_config,
            submit_tier=config.submit_tier, fingerprint=config.fingerprint, known=dict(self.state.files),
            full_ip_hashes=self.state.full_ip_hashes(), contributed=self.state.contributed(config.submit_tier),
        )  # fmt: skip
        result: SubmissionResult | None = None
        ok = True
        if prepared.plan is not None and prepared.plan.transmitted:
            try:
                result = await self._send(prepared)
                self._backoff = 0.0
            except _Abandoned:
                log.info("agent.sending_abandoned", files=len(prepared.plan.transmitted),
                         detail="they are sent again at the next start (safe: same submission ids)")  # fmt: skip
                ok = False
            except UserFacingError as error:  # broker down or restarting, key refused, ...
                log.error("agent.submit_failed", error=str(error)[:500], files=len(prepared.plan.transmitted),
                          retry_in_s=round(self._back_off(), 1))  # fmt: skip
                ok = False
        records = outcomes(prepared, result, fingerprint=config.fingerprint, submit_tier=config.submit_tier)
        self.state.files.update(records)
        published = [(s.event_id, s.event) for s in result.submissions] if result is not None else []
        pending_audit = self.state.audit.setdefault("pending", [])
        pending_audit.extend(str(event_id) for event_id, _ in published if str(event_id) not in pending_audit)
        self.state.save()
        self._last_saved = time.monotonic()
        for source, record in sorted(records.items()):
            if source in prepared.unchanged:
                continue
            log.info("agent.file", source=source, status=record.status, sensitivity=record.sensitivity,
                     submission_id=record.submission_id, reasons=record.reasons[:5] or None)  # fmt: skip
        if published and self.guard is not None:
            await self._audit([Pending(event_id, event) for event_id, event in published])
        return ok

    async def _send(self, prepared: Prepared) -> SubmissionResult:
        assert prepared.plan is not None
        if self._stop.is_set():  # asked to stop while the chunk was being extracted: send nothing new
            raise _Abandoned
        sending = asyncio.create_task(
            submit_plan(prepared.plan, self.config.api_key, broker_url=self.config.broker_url,
                        timeout=self.config.agent.receipt_timeout, window=self.publish_window,
                        batch_size=DEFAULT_BATCH_SIZE)
        )  # fmt: skip
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done():
                grace = self.config.agent.shutdown_grace
                log.info("agent.finishing_sending", grace_s=grace)
                await asyncio.wait({sending}, timeout=grace)
            if not sending.done():
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sending
                raise _Abandoned
            return sending.result()
        finally:
            stopping.cancel()

    def _back_off(self) -> float:
        self._backoff = min(self.config.agent.retry_seconds, max(1.0, self._backoff * 2))
        self._broker_retry_at = time.monotonic() + self._backoff
        return self._backoff

    # -- audit -----------------------------------------------------------------------------------------

    async def _audit(self, pending: list[Pending]) -> bool:
        """Verify receipts (see audit_guard.py); a fork halts the agent. True if the state changed."""
        assert self.state is not None and self.guard is not None
        if not pending or self.state.halted:
            return False
        try:
            await self.guard.verify(self.state, pending)
        except AuditFork as fork:
            latest = self.guard.witness.latest
            self.state.halted = {
                "reason": "audit_fork",
                "error": str(fork)[:1000],
                "at": utc_now(),
                "trusted_checkpoint_size": latest.size if latest else None,
            }
            self.state.save()
            self._training_stop.set()
            log.critical("agent.audit_fork", error=str(fork)[:1000], partner_id=self.config.partner_id,
                         detail="Mishale's audit log does not extend the checkpoint this partner saw before: it was "
                                "rewritten or forked. Submissions and training are halted; tell Mishale and your "
                                "auditor, and keep witness.note and receipts/ as evidence")  # fmt: skip
            self._log_halted()
        return True

    # -- training (Tier 3) -----------------------------------------------------------------------------

    def _node_config(self) -> dict[str, Any]:
        """What `join` gives the ClientApp, plus the agent config, whose labels and agreements decide what trains."""
        return {
            "partner-id": self.config.partner_id,
            "corpus": str(self.config.corpus),
            "dp-epsilon": self.config.training.dp_epsilon,
            "home": str(self.config.home),
            "config": str(self.config.path),
        }

    async def _train_forever(self) -> None:
        from mshale_fl.agents.partner.client_app import app, trainer_for_config
        from mshale_fl.federation import PartnerNode

        assert self.state is not None
        node_config = self._node_config()
        url = partner_broker_url(self.config.broker_url, self.config.partner_id, self.config.api_key)
        backoff = 1.0
        while not self._training_stop.is_set():
            if self.state.halted:
                return
            self._corpus_changed.clear()
            try:
                # The same warm-up as `join`: load the data and the training stack before joining.
                examples = await asyncio.to_thread(trainer_for_config(node_config).warm_up)
            except Exception as error:  # nothing to train on yet, an unusable corpus, or a bug: wait for a change
                log.error("agent.training_unavailable", error=f"{error}"[:500] if isinstance(error, UserFacingError)
                          else f"{type(error).__name__}: {error}"[:500], detail="tried again when the corpus changes")  # fmt: skip
                await self._wait_for(self._corpus_changed)
                continue
            log.info("agent.training_ready", examples=examples, dp_epsilon=self.config.training.dp_epsilon)
            node = PartnerNode(url, self.config.partner_id, app, node_config=node_config,
                               heartbeat_seconds=self.config.training.heartbeat_seconds,
                               shutdown_grace=self.config.agent.shutdown_grace)  # fmt: skip
            try:
                await node.run(self._training_stop)
                backoff = 1.0
                continue
            except asyncio.CancelledError:
                raise
            except UserFacingError as error:  # the broker is down at start, or refuses the grid
                log.error("agent.training_node_failed", error=str(error)[:500], retry_in_s=backoff)
            except Exception as error:  # a bug must not end training for good: say so, try again later
                log.exception("agent.training_node_crashed", error=f"{type(error).__name__}: {error}"[:500])
            await self._wait_for(None, timeout=backoff)
            backoff = min(self.config.agent.retry_seconds, backoff * 2)

    async def _wait_for(self, event: asyncio.Event | None, timeout: float | None = None) -> None:
        """Until `event` (or `timeout`), or until training must stop."""
        waiters = {asyncio.create_task(self._training_stop.wait())}
        if event is not None:
            waiters.add(asyncio.create_task(event.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _finish_training(self, training: asyncio.Task[None]) -> None:
        # PartnerNode.run finishes or abandons its instruction within its shutdown grace, then says bye.
        done, _ = await asyncio.wait({training}, timeout=self.config.agent.shutdown_grace + 15)
        if not done:
            training.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await training
            log.warning("agent.training_abandoned")
        elif not training.cancelled() and training.exception() is not None:
            error = training.exception()
            log.error("agent.training_crashed", error=f"{type(error).__name__}: {error}"[:500])


__all__ = ["PartnerDaemon"]

"""The demo: a small federation on the local RabbitMQ, with the embedded defaults.

Everything a partner or an operator would type is run as the real command (`mshale-fl extract`,
`submit`, `worker ...`, `audit verify`) in child processes, so the demo shows the product, not a
simulation of it. Each run gets a fresh RabbitMQ vhost and a fresh state folder, so it can run
again and again; `--keep-running` leaves the workers up afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.table import Table

from mshale_fl.demo.processes import ProcessGroup
from mshale_fl.errors import UserFacingError
from mshale_fl.testing.rabbitmq import MANAGEMENT_URL, amqp_url, management_client

DEMO_VHOST = "mshale-demo"
EXAMPLE_CORPUS = Path(__file__).resolve().parents[2] / "examples" / "lab-protocols"
WORKER_ROLES = ("validate", "ledger", "audit", "predict")


@dataclass(frozen=True)
class DemoPartner:
    partner_id: str
    tier: int
    agreements: tuple[str, ...]
    epsilon: float = 8.0
    """The ledger's budget per model version."""


# RabbitMQ users are global to the broker, so demo partners carry a prefix no real partner
# should use; a new run deletes the previous run's users.
PARTNERS = (
    DemoPartner("demo-alpha", 1, ()),
    DemoPartner("demo-beta", 2, ("dpa",)),
    DemoPartner("demo-gamma", 3, ("dpa", "training")),
    DemoPartner("demo-delta", 3, ("dpa", "training")),
    # A small ledger budget: three rounds (epsilon ~0.5, its own limit) leave under 10 % of it, so the
    # ledger pauses demo-epsilon for this model version (budget.low, partner.paused).
    DemoPartner("demo-epsilon", 3, ("dpa", "training"), epsilon=0.53),
)
TRAINERS = tuple(partner.partner_id for partner in PARTNERS if partner.tier == 3)
BASE_MODEL = Path(__file__).resolve().parents[2] / "models" / "mshale1_v0.pt"
TRAINING_ROUNDS = 3


class DemoFailed(UserFacingError):
    """A demo step failed; the message names the step and where its log is."""


@dataclass
class DemoReport:
    partners: list[dict[str, Any]] = field(default_factory=list)
    receipts: list[dict[str, Any]] = field(default_factory=list)
    events_on_stream: int = 0
    audit: dict[str, Any] = field(default_factory=dict)
    replay: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    budgets: list[dict[str, Any]] = field(default_factory=list)
    access: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "partners": self.partners,
            "receipts": self.receipts,
            "events_on_stream": self.events_on_stream,
            "audit": self.audit,
            "replay": self.replay,
            "training": self.training,
            "budgets": self.budgets,
            "access": self.access,
            "seconds": round(self.seconds, 1),
        }


class Demo:
    def __init__(self, home: Path, console: Console, *, keep_running: bool = False) -> None:
        self.home = home.resolve()
        self.console = console
        self.keep_running = keep_running
        self.broker_url = amqp_url(DEMO_VHOST)
        self.env = {
            "MSHALE_HOME": str(self.home / "mishale"),
            "MSHALE_BROKER_URL": self.broker_url,
            "MSHALE_LEDGER_URL": f"sqlite:///{self.home / 'mishale' / 'ledger.sqlite3'}",
            "MSHALE_AUDIT_ORIGIN": "demo.mshale.local/audit",
            "MSHALE_LOG_LEVEL": "INFO",
        }
        self.report = DemoReport()
        self.workers: ProcessGroup | None = None

    # -- orchestration -----------------------------------------------------------------------

    def run(self) -> DemoReport:
        started = time.monotonic()
        self._fresh_state()
        workers = self.workers = ProcessGroup(self.env, self.home / "logs")
        try:
            self._step("declare the broker topology", lambda: self._cli("broker", "declare"))
            self._step("create the audit log's signing key", lambda: self._cli("audit", "keygen"))
            self._step(f"start the Mishale workers ({', '.join(WORKER_ROLES)})", lambda: self._start(workers))
            keys: dict[str, str] = {}
            self._step("register five partners with tiers 1, 2 and 3", lambda: keys.update(self._register()))
            for partner_id, tier in (("demo-alpha", 1), ("demo-beta", 2)):
                self._step(
                    f"{partner_id}: extract its corpus locally at Tier {tier} and submit what may leave",
                    lambda partner_id=partner_id, tier=tier: self._extract_and_submit(partner_id, tier, keys[partner_id]),
                )
            # The partner's own config allows vectors, but Mishale's ledger grants it Tier 1 only:
            # the validator rejects the batch and the partner gets the reason back.
            self._step(
                "demo-alpha: try Tier 2 vectors beyond its tier (rejected by Mishale)",
                lambda: self._extract_and_submit("demo-alpha", 2, keys["demo-alpha"], expect_rejection=True),
            )
            self._step(
                f"Tier 3: {len(TRAINERS)} partners join, {TRAINING_ROUNDS} FedProx rounds with DP-SGD and secure aggregation",
                lambda: self._train(workers, keys),
            )
            self._step(
                "what partners get back: predictions at Tier 1, a verified model download at Tier 3, a denial at Tier 2",
                lambda: self._access(keys),
            )
            self._step("replay the event stream against the audit log", self._replay)
            self._check_workers(workers)
        finally:
            if not self.keep_running:
                codes = workers.stop()
                unclean = {name: code for name, code in codes.items() if code != 0}
                if unclean:
                    self.console.print(f"[yellow]workers that did not stop cleanly: {unclean}[/]")
        self._step("verify the audit log", self._verify_audit)
        self.report.seconds = time.monotonic() - started
        return self.report

    def stay_up(self) -> None:
        """With --keep-running: keep the workers up until Ctrl-C or SIGTERM, then stop them cleanly."""
        import signal
        import threading

        if self.workers is None:
            return
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
        exports = " ".join(f"{name}={value}" for name, value in self.env.items() if name != "MSHALE_LOG_LEVEL")
        self.console.print(
            "[bold]The demo system stays up[/] (workers: "
            + ", ".join(child.name for child in self.workers.children)
            + f"). Look at it with:\n  {exports} mshale-fl console\nCtrl-C stops it."
        )
        try:
            while not stop.wait(1.0):
                if self.workers.failed():
                    self.console.print("[yellow]a worker exited; stopping the demo system[/]")
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            codes = self.workers.stop()
            self.console.print(f"stopped: {codes}")

    def _step(self, title: str, action: Callable[[], object]) -> None:
        with self.console.status(f"{title} ..."):
            step_started = time.monotonic()
            action()
        self.console.print(f"[green]✓[/] {title} [dim]({time.monotonic() - step_started:.1f} s)[/]")

    def _fresh_state(self) -> None:
        if self.home.exists():
            shutil.rmtree(self.home)
        (self.home / "mishale").mkdir(parents=True)
        path = quote(DEMO_VHOST, safe="")
        try:
            with management_client() as client:
                client.delete(f"/api/vhosts/{path}")
                for partner in PARTNERS:
                    client.delete(f"/api/users/{quote(partner.partner_id, safe='')}")
                client.put(f"/api/vhosts/{path}").raise_for_status()
                client.put(
                    f"/api/permissions/{path}/guest", json={"configure": ".*", "write": ".*", "read": ".*"}
                ).raise_for_status()
        except Exception as error:
            raise DemoFailed(
                f"cannot prepare the RabbitMQ vhost {DEMO_VHOST!r} through the management API at {MANAGEMENT_URL} "
                f"({error}); start RabbitMQ with `rabbitmq-server -detached` and enable the plugin with "
                "`rabbitmq-plugins enable rabbitmq_management`"
            ) from None

    def _start(self, workers: ProcessGroup) -> None:
        for role in WORKER_ROLES:
            workers.start(f"worker-{role}", "worker", role)
        time.sleep(1.0)
        self._check_workers(workers)

    def _check_workers(self, workers: ProcessGroup) -> None:
        for child in workers.failed():
            raise DemoFailed(f"{child.name} exited with {child.process.returncode}; its log:\n{child.tail()}")

    # -- partner and operator actions --------------------------------------------------------

    def _register(self) -> dict[str, str]:
        until = (date.today() + timedelta(days=365)).isoformat()
        keys: dict[str, str] = {}
        for partner in PARTNERS:
            args = ["partners", "add", partner.partner_id, "--tier", str(partner.tier), "--json"]
            args += ["--epsilon", str(partner.epsilon)]
            if "dpa" in partner.agreements:
                args += ["--dpa-until", until, "--dpa-attorney-reviewed"]
            if "training" in partner.agreements:
                args += ["--training-until", until]
            result = json.loads(self._cli(*args))
            keys[partner.partner_id] = result["api_key"]
            self.report.partners.append(
                {
                    "partner_id": partner.partner_id,
                    "tier": partner.tier,
                    "agreements": list(partner.agreements),
                    "epsilon_per_model_version": partner.epsilon,
                }
            )
        return keys

    def _partner_dir(self, partner_id: str) -> Path:
        return self.home / "partners" / partner_id

    def _extract_and_submit(self, partner_id: str, tier: int, api_key: str, *, expect_rejection: bool = False) -> None:
        corpus = self._partner_dir(partner_id) / "lab-protocols"
        if not corpus.exists():
            shutil.copytree(EXAMPLE_CORPUS, corpus)
        output = self._partner_dir(partner_id) / f"tier{tier}"
        self._cli(
            "extract", "--tier", str(tier), "--corpus", str(corpus), "--output", str(output),
            partner_home=partner_id,
        )  # fmt: skip
        submitted = self._cli(
            "submit", "--specs", str(output), "--json",
            partner_home=partner_id, extra_env={"MSHALE_API_KEY": api_key},
            ok_codes=(1,) if expect_rejection else (0,),
        )  # fmt: skip
        result = json.loads(submitted)
        for receipt in result.get("receipts", []):
            self.report.receipts.append({"partner_id": partner_id, "tier": tier, **receipt})
        for withheld in result.get("withheld", []):
            self.report.receipts.append(
                {
                    "partner_id": partner_id,
                    "tier": tier,
                    "source": withheld["source"],
                    "status": "withheld",
                    "reasons": [{"code": withheld["reason"]}],
                }
            )

    def _train(self, workers: ProcessGroup, keys: dict[str, str]) -> None:
        from mshale_fl.demo.corpora import write_corpus

        joined = []
        for index, partner_id in enumerate(TRAINERS):
            corpus = write_corpus(self._partner_dir(partner_id) / "efficiency-corpus", 24, seed=index)
            env = {
                "MSHALE_API_KEY": keys[partner_id],
                "MSHALE_HOME": str(self._partner_dir(partner_id) / ".mshale"),
            }
            joined.append(
                workers.start(
                    f"join-{partner_id}",
                    "join", "--server", "127.0.0.1:5672", "--corpus", str(corpus), "--tier", "3",
                    "--dp-epsilon", "0.5",
                    env=env,
                )  # fmt: skip
            )
        # Mishale's own hold-out protocols: the per-round loss is measured on them, never on partners' data.
        holdout = write_corpus(self.home / "mishale" / "holdout-corpus", 48, seed=1000)
        self._cli(
            "serve", "--model", str(BASE_MODEL), "--rounds", str(TRAINING_ROUNDS), "--min-clients", str(len(TRAINERS)),
            "--dp-epsilon", "1.0", "--round-timeout", "180", "--eval-corpus", str(holdout),
        )  # fmt: skip
        for child in joined:  # partners leave once the run is published
            child.process.terminate()
        runs = sorted((self.home / "mishale" / "federation" / "runs").glob("*/state.json"))
        state = json.loads(runs[-1].read_text())
        self.report.training = {
            "secure_aggregation": True,
            "model_version": state["model_version"],
            "published_digest": state["published_digest"],
            "rounds": [
                {"round": r["round"], "failed": r["failed"], "participants": r["participants"], "metrics": r["metrics"]}
                for r in state["rounds"]
            ],
        }
        for partner_id in TRAINERS:
            budget = json.loads(self._cli("budget", "--partner-id", partner_id, "--json"))
            self.report.budgets.append({"partner_id": partner_id, **_budget_summary(budget)})

    def _access(self, keys: dict[str, str]) -> None:
        version = self.report.training["model_version"]
        # The predict worker registers model.published once the ledger has settled the round's spends.
        deadline = time.monotonic() + 120
        while True:
            listed = json.loads(self._cli("model", "list", "--json", partner_home="demo-gamma",
                                          extra_env={"MSHALE_API_KEY": keys["demo-gamma"]}))  # fmt: skip
            if any(v["version"] == version for v in listed.get("versions", [])):
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"model version {version} was not registered by the predict worker within 120 s")
            time.sleep(1.0)
        predicted = json.loads(
            self._cli("predict", "--specs", str(self._partner_dir("demo-alpha") / "tier1"), "--json",
                      partner_home="demo-alpha", extra_env={"MSHALE_API_KEY": keys["demo-alpha"]})  # fmt: skip
        )
        for row in predicted["predictions"]:
            self.report.access.append(
                {"partner_id": "demo-alpha", "action": "predict spec", "item": row.get("source"),
                 "status": row.get("status"), "detail": row.get("efficiency")}  # fmt: skip
            )
        verifier = self._cli("audit", "pubkey").strip()
        pulled = json.loads(
            self._cli("model", "pull", "--version", str(version), "--output", str(self._partner_dir("demo-gamma") / "models"),
                      "--verifier-key", verifier, "--json",
                      partner_home="demo-gamma", extra_env={"MSHALE_API_KEY": keys["demo-gamma"]})  # fmt: skip
        )
        self.report.access.append(
            {"partner_id": "demo-gamma", "action": f"download model v{version}", "item": pulled["files"]["model"],
             "status": "granted", "detail": pulled["sha256"]}  # fmt: skip
        )
        denied = self._cli("model", "pull", "--version", str(version), "--output", str(self._partner_dir("demo-beta") / "models"),
                           "--verifier-key", verifier, "--json", ok_codes=(1,),
                           partner_home="demo-beta", extra_env={"MSHALE_API_KEY": keys["demo-beta"]})  # fmt: skip
        denial = (json.loads(denied).get("denial") or {}) if denied.strip() else {}
        self.report.access.append(
            {"partner_id": "demo-beta", "action": f"download model v{version}", "item": None, "status": "denied",
             "detail": "; ".join(r["code"] for r in denial.get("reasons", [])) or "denied"}  # fmt: skip
        )

    def _replay(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "mshale_fl.cli", "audit", "replay", "--from", "first", "--json"],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode not in (0, 1):
            raise DemoFailed(f"`mshale-fl audit replay` failed: {result.stderr.strip() or result.stdout.strip()}")
        self.report.replay = json.loads(result.stdout)

    def _verify_audit(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "mshale_fl.cli", "audit", "verify", "--json"],
            env={**os.environ, **self.env}, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if result.returncode not in (0, 1):
            raise DemoFailed(f"`mshale-fl audit verify` failed: {result.stderr.strip() or result.stdout.strip()}")
        self.report.audit = json.loads(result.stdout)

    def _cli(
        self,
        *args: str,
        partner_home: str | None = None,
        extra_env: dict[str, str] | None = None,
        ok_codes: tuple[int, ...] = (0,),
    ) -> str:
        env = {**os.environ, **self.env, **(extra_env or {})}
        if partner_home is not None:
            env["MSHALE_HOME"] = str(self._partner_dir(partner_home) / ".mshale")
            env.pop("MSHALE_LEDGER_URL", None)
        result = subprocess.run(
            [sys.executable, "-m", "mshale_fl.cli", *args], env=env, capture_output=True, text=True, timeout=600
        )
        if result.returncode not in ok_codes:
            raise DemoFailed(
                f"`mshale-fl {' '.join(args[:2])}` exited with {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()[-2000:]}"
            )
        return result.stdout


def print_summary(report: DemoReport, console: Console) -> None:
    partners = Table("partner", "tier", "agreements", title="Partners")
    for partner in report.partners:
        partners.add_row(partner["partner_id"], str(partner["tier"]), ", ".join(partner["agreements"]) or "-")
    console.print(partners)
    receipts = Table("partner", "tier", "protocol", "result", "reasons", title="Submissions")
    for receipt in report.receipts:
        receipts.add_row(
            str(receipt.get("partner_id", "")),
            str(receipt.get("tier", "")),
            str(receipt.get("source", receipt.get("content_hash", ""))[:40]),
            str(receipt.get("status", "")),
            "; ".join(reason.get("code", "") for reason in receipt.get("reasons", [])) or "-",
        )
    console.print(receipts)
    audit = report.audit
    console.print(
        f"Audit log: {audit.get('entries', '?')} entries, signed root {audit.get('verified_root') or '-'} "
        f"at size {audit.get('verified_size', '?')}, "
        f"verified: {'yes' if audit.get('ok') else 'NO'}"
    )
    training = report.training
    if training:
        rounds = Table(
            "round", "result", "participants", "secure aggregation", "hold-out loss",
            title=f"Tier 3 training of model v{training['model_version']}",
        )  # fmt: skip
        for record in training["rounds"]:
            metrics = record.get("metrics") or {}
            secagg = (
                f"{int(metrics['secagg_unmasked'])} unmasked, t = {int(metrics['secagg_threshold'])}"
                if "secagg_unmasked" in metrics
                else "-"
            )
            loss = f"{metrics['eval_loss']:.4f}" if "eval_loss" in metrics else "-"
            rounds.add_row(
                str(record["round"]),
                "failed" if record["failed"] else "completed",
                ", ".join(record["participants"]),
                secagg,
                loss,
            )
        console.print(rounds)
        console.print(f"Published model v{training['model_version']}: sha256 {training['published_digest']}")
    if report.access:
        access = Table("partner", "asked for", "item", "result", "detail", title="What partners get back")
        for row in report.access:
            detail = row.get("detail")
            access.add_row(
                row["partner_id"], row["action"], str(row.get("item") or "-")[-40:], str(row["status"]),
                f"efficiency {detail:.3f}" if isinstance(detail, float) else str(detail or "-")[:64],
            )  # fmt: skip
        console.print(access)
    if report.budgets:
        budgets = Table("partner", "model version", "epsilon total", "spent", "remaining", "state", title="Privacy budgets")
        for budget in report.budgets:
            budgets.add_row(
                budget["partner_id"], str(budget.get("model_version", "")), f"{budget.get('total', 0):.3f}",
                f"{budget.get('spent', 0):.3f}", f"{budget.get('remaining', 0):.3f}", str(budget.get("state", "")),
            )  # fmt: skip
        console.print(budgets)
    replay = report.replay
    console.print(
        f"Replay of mshale.events.log: {replay.get('compared', '?')} events compared with the log, "
        f"{(replay.get('skipped') or {}).get('checkpoints', 0)} checkpoint announcements skipped, "
        f"match: {'yes' if replay.get('ok') else 'NO: ' + str(replay.get('first_problem'))}"
    )
    console.print(f"Finished in {report.seconds:.1f} s")


def _budget_summary(budget: dict[str, Any]) -> dict[str, Any]:
    """The trained model version's budget from `mshale-fl budget --json` output."""
    entries = budget.get("budgets") or []
    entry = max(entries, key=lambda item: item.get("model_version", 0), default={})
    return {
        "model_version": entry.get("model_version"),
        "total": entry.get("epsilon_total"),
        "spent": entry.get("epsilon_spent"),
        "remaining": entry.get("epsilon_remaining"),
        "state": entry.get("state"),
    }

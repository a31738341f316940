"""`mshale-fl worker ROLE`: run one Mishale worker; start N of them to scale a role."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import typer

from mshale_fl.broker import Processor, run_worker
from mshale_fl.config import Settings, get_settings
from mshale_fl.logging import configure_logging, get_logger

app = typer.Typer(
    help="Mishale workers: each competes with its replicas on its role's quorum queue.", no_args_is_help=True
)
log = get_logger(__name__)


@app.callback()
def _workers() -> None:
    """Mishale workers: each competes with its replicas on its role's quorum queue."""


def _serve(role: str, build: Callable[[Settings], Processor]) -> None:
    settings = get_settings()
    configure_logging(settings.log_level)
    processor = build(settings)

    async def main() -> None:
        stats = await run_worker(role, processor, settings)
        log.info("worker.stopped", role=role, **vars(stats))

    try:
        asyncio.run(main())
    finally:
        close = getattr(processor, "close", None)
        if close is not None:
            close()


@app.command("ledger")
def ledger() -> None:
    """Record contributions and privacy spends; publish budget.low / partner.paused."""
    from mshale_fl.agents.mishale.ledger_worker import ledger_processor

    _serve("ledger", ledger_processor)


@app.command("validate")
def validate() -> None:
    """Judge every spec.submitted / vectors.submitted; answer submission.accepted or submission.rejected."""
    from mshale_fl.agents.mishale.validate import validate_processor

    _serve("validate", validate_processor)


@app.command("audit")
def audit() -> None:
    """Append every event to the audit log, once each and in order; answer partners' receipt requests."""
    from mshale_fl.agents.mishale.audit_worker import run_audit_worker

    run_audit_worker(get_settings())


@app.command("predict")
def predict() -> None:
    """Answer prediction requests and model list/download requests by the access policy; keep the model registry."""
    from mshale_fl.agents.mishale.predict_worker import run_predict_worker

    run_predict_worker(get_settings())

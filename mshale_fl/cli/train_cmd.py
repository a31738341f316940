"""`mshale-fl serve` (Mishale) and `mshale-fl join` (a partner): federated training over RabbitMQ.

`serve` runs the ServerApp (agents/mishale/server_app.py) in-process on an `AmqpGrid`: it waits
for enough eligible partners, runs FedProx rounds under the ledger's privacy budgets, publishes
round events, saves each round's model under MSHALE_HOME and resumes an unfinished run after a
restart. SIGTERM / Ctrl-C stops it between two messages; the round in progress is run again on
the next start.

`join` runs the partner's ClientApp (agents/partner/client_app.py) on a `PartnerNode`: it loads
and featurises the corpus locally, announces itself, trains with DP-SGD whenever the server asks
and stays until SIGTERM. `--server HOST:PORT` is the RabbitMQ broker the federation runs on (the
server is reached through it, never directly). The partner logs in as its own broker user: the
user name is its partner id (read from the API key, or `--partner-id` for keys that do not carry
it) and the password is derived from the API key (`broker_password`), taken from MSHALE_API_KEY.
Without an API key, the credentials and virtual host of MSHALE_BROKER_URL are used as they are
(a partner agent run by an operator, or a test). The virtual host always comes from
MSHALE_BROKER_URL.

Exit status: 0 done (or stopped cleanly), 2 a mistake to fix (printed as one line).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlsplit, urlunsplit

import typer

from mshale_fl.config import get_settings
from mshale_fl.errors import UserFacingError
from mshale_fl.logging import configure_logging, get_logger

log = get_logger(__name__)


def serve(
    model: Annotated[
        Path, typer.Option("--model", help="The model to train from (its version + 1 is trained).")
    ] = Path("models/mshale1_v0.pt"),
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Training rounds (a failed round counts).")] = 10,
    min_clients: Annotated[
        int,
        typer.Option(
            "--min-clients", min=1, help="Partners needed to start a round and updates needed to complete it."
        ),
    ] = 3,
    dp_epsilon: Annotated[
        float,
        typer.Option(
            "--dp-epsilon", help="Privacy budget per partner for the whole run (each partner may ask for less)."
        ),
    ] = 1.0,
    mu: Annotated[float, typer.Option("--mu", min=0.0, help="FedProx proximal weight.")] = 0.01,
    round_timeout: Annotated[
        float, typer.Option("--round-timeout", min=0.1, help="Seconds to wait for the updates of one round.")
    ] = 600.0,
    plan_timeout: Annotated[
        float, typer.Option("--plan-timeout", min=0.1, help="Seconds to wait for the partners' privacy plans.")
    ] = 60.0,
    local_epochs: Annotated[int, typer.Option("--local-epochs", min=1, help="Local epochs per round.")] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Expected DP-SGD batch size.")] = 32,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Local learning rate.")] = 0.05,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", min=0.0, help="DP-SGD clipping norm.")] = 1.0,
    new_run: Annotated[
        bool, typer.Option("--new-run", help="Abandon an unfinished run of this model and start a new one.")
    ] = False,
    eval_corpus: Annotated[
        Path | None,
        typer.Option(
            "--eval-corpus",
            help="Mishale's own hold-out protocols with outcomes; each round's model is scored on them (eval_loss).",
        ),
    ] = None,
    secure_aggregation: Annotated[
        bool,
        typer.Option(
            "--secure-aggregation/--no-secure-aggregation",
            help="Partners send only masked updates and the server unmasks their sum (Bonawitz et al.).",
        ),
    ] = True,
    secagg_threshold: Annotated[
        float,
        typer.Option(
            "--secagg-threshold",
            help="Share threshold t as a fraction of the share holders (> 0.5; t = ceil(fraction x holders)).",
        ),
    ] = 0.6,
    secagg_neighbours: Annotated[
        int,
        typer.Option(
            "--secagg-neighbours", min=0, help="SecAgg+ neighbours per partner (even; 0 = every partner, the complete graph)."
        ),
    ] = 0,
    secagg_clip: Annotated[
        float, typer.Option("--secagg-clip", help="Bound on every coordinate of an update before quantisation.")
    ] = 1.0,
    secagg_timeout: Annotated[
        float, typer.Option("--secagg-timeout", min=0.1, help="Seconds to wait for each secure-aggregation stage.")
    ] = 60.0,
) -> None:
    """Run federated training over RabbitMQ (FedProx, DP budgets from the ledger, secure aggregation), resuming an unfinished run."""
    from mshale_fl.federation.secagg_protocol import SecAggConfigError, SecAggSettings

    from mshale_fl.agents.mishale.server_app import (
        AmqpParticipants,
        FederatedTraining,
        GridEvents,
        LedgerBudgets,
        ServeConfig,
    )
    from mshale_fl.agents.mishale.identities import LedgerIdentities
    from mshale_fl.federation import AmqpGrid, LedgerEligibility
    from mshale_fl.ledger import Mechanism, epsilon, open_ledger
    from mshale_fl.training.model import load_model

    settings = get_settings()
    configure_logging(settings.log_level)
    try:
        secagg_settings = SecAggSettings(
            threshold_fraction=secagg_threshold,
            neighbours=secagg_neighbours,
            clip=secagg_clip,
            stage_timeout=secagg_timeout,
        )
    except SecAggConfigError as error:
        raise UserFacingError(str(error)) from None
    config = ServeConfig(
        model_path=model,
        rounds=rounds,
        min_clients=min_clients,
        dp_epsilon=dp_epsilon,
        home=settings.home,
        mu=mu,
        round_timeout=round_timeout,
        plan_timeout=plan_timeout,
        local_epochs=local_epochs,
        batch_size=batch_size,
        lr=lr,
        max_grad_norm=max_grad_norm,
        new_run=new_run,
        secure_aggregation=secure_aggregation,
        secagg=secagg_settings,
        eval_corpus=eval_corpus,
    )
    _base, metadata = load_model(model)
    engine = open_ledger(settings=settings)
    # Opacus' RDP analysis is imported on first use (seconds): do it now, not inside the first
    # round's ledger transaction, where it would hold the ledger's write lock meanwhile.
    epsilon([Mechanism(1.0, 0.01, 1)], 1e-5)
    stop = threading.Event()
    grid = AmqpGrid(
        settings.broker_url,
        eligibility=LedgerEligibility(engine, metadata.version + 1),
        delivery_limit=settings.delivery_limit,
        publish_window=settings.publish_window,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("serve.stopping", signal=signal.Signals(signum).name)
        stop.set()
        # From another thread: the handler runs on the main thread, possibly inside the grid's lock.
        threading.Thread(target=grid.interrupt, name="serve interrupt", daemon=True).start()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        grid.start()
        try:
            outcome = FederatedTraining(
                grid,
                config,
                participants=AmqpParticipants(grid),
                budgets=LedgerBudgets(engine),
                events=GridEvents(grid),
                identities=LedgerIdentities(engine),
                stop=stop,
            ).run()
        finally:
            grid.close()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        engine.dispose()
    state = outcome.state
    if outcome.interrupted:
        typer.echo(
            f"stopped: run {state.run_id} resumes from round {state.last_round + 1} at the next `mshale-fl serve`"
        )
        return
    typer.echo(
        f"published model version {state.model_version} ({outcome.published_digest}) at {outcome.published_path} "
        f"after {state.successful_rounds} of {len(state.rounds)} rounds (run {state.run_id})"
    )


def join(
    server: Annotated[
        str | None,
        typer.Option("--server", help="HOST:PORT of the federation's RabbitMQ broker (default: MSHALE_BROKER_URL's)."),
    ] = None,
    corpus: Annotated[
        Path, typer.Option("--corpus", help="Your Tier 3 corpus (protocols labelled `efficiency`, with outcomes).")
    ] = Path("corpus"),
    tier: Annotated[int, typer.Option("--tier", help="Contribution tier; federated training is Tier 3.")] = 3,
    dp_epsilon: Annotated[
        float, typer.Option("--dp-epsilon", help="Your privacy budget per model version (the server's may be lower).")
    ] = 1.0,
    partner_id: Annotated[
        str | None,
        typer.Option(
            "--partner-id",
            envvar="MSHALE_PARTNER_ID",
            show_envvar=True,
            help="Your partner id, if your API key does not carry it.",
        ),
    ] = None,  # fmt: skip
    heartbeat: Annotated[
        float, typer.Option("--heartbeat", min=0.05, help="Seconds between presence announcements.")
    ] = 5.0,
) -> None:
    """Take part in federated training as a Tier 3 partner: train locally with DP-SGD whenever the server asks."""
    from mshale_fl.agents.partner.client_app import app, trainer_for_config
    from mshale_fl.federation import PartnerNode

    if tier != 3:
        raise UserFacingError(
            f"join trains a shared model, which is Tier 3; got --tier {tier} (use submit for Tiers 1 and 2)"
        )
    if not (dp_epsilon > 0):
        raise UserFacingError(f"--dp-epsilon must be > 0, got {dp_epsilon}")
    settings = get_settings()
    configure_logging(settings.log_level)
    api_key = settings.api_key.get_secret_value().strip() if settings.api_key is not None else None
    partner_id = resolve_partner_id(api_key, partner_id)
    url = partner_broker_url(settings.broker_url, partner_id, api_key, server)
    node_config = {
        "partner-id": partner_id,
        "corpus": str(corpus),
        "dp-epsilon": dp_epsilon,
        "home": str(settings.home),
    }
    # Fail fast, before joining, if the corpus cannot be trained on; and load the training stack now.
    examples = trainer_for_config(node_config).warm_up()
    log.info("join.data_loaded", partner_id=partner_id, examples=examples)
    node = PartnerNode(url, partner_id, app, node_config=node_config, heartbeat_seconds=heartbeat)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await node.run(stop)

    asyncio.run(main())


def resolve_partner_id(api_key: str | None, explicit: str | None) -> str:
    """The partner id from the API key (keys carry it), else `--partner-id` / MSHALE_PARTNER_ID."""
    from_key: str | None = None
    if api_key:
        try:
            from mshale_fl.ledger.api_keys import partner_id_from_key  # keys of the form mshale_<partner>_<id>_<secret>
        except ImportError:  # a ledger without self-describing keys
            partner_id_from_key = None  # type: ignore[assignment]
        if partner_id_from_key is not None:
            try:
                from_key = partner_id_from_key(api_key)
            except UserFacingError:
                if not explicit:
                    raise
    if from_key and explicit and from_key != explicit:
        raise UserFacingError(f"--partner-id {explicit} does not match the API key, which belongs to {from_key}")
    partner = from_key or explicit
    if not partner:
        raise UserFacingError("no partner id: set MSHALE_API_KEY (keys name their partner) or pass --partner-id")
    from mshale_fl.federation.wire import partner_queue

    try:
        partner_queue(partner)
    except ValueError as error:
        raise UserFacingError(str(error)) from None
    return partner


def partner_broker_url(broker_url: str, partner_id: str, api_key: str | None, server: str | None) -> str:
    """MSHALE_BROKER_URL with host:port from `server` and, given an API key, the partner's own credentials."""
    parts = urlsplit(broker_url)
    host = parts.hostname or "localhost"
    port = parts.port
    if server:
        host, _, port_text = server.rpartition(":") if ":" in server else (server, "", "")
        if not host or (port_text and not port_text.isdigit()):
            raise UserFacingError(f"--server must be HOST:PORT (the RabbitMQ broker), got {server!r}")
        port = int(port_text) if port_text else None
    netloc = host if port is None else f"{host}:{port}"
    if api_key:
        from mshale_fl.ledger.broker_identity import broker_password

        netloc = f"{quote(partner_id, safe='')}:{quote(broker_password(api_key), safe='')}@{netloc}"
    elif parts.username is not None:
        userinfo = parts.username + (f":{parts.password}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit((parts.scheme or "amqp", netloc, parts.path, parts.query, ""))


__all__ = ["join", "partner_broker_url", "resolve_partner_id", "serve"]

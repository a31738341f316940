"""`mshale-fl partners ...`, `mshale-fl agreements ...` and `mshale-fl budget`: the ledger for operators.

Registered by the main app as:
    app.add_typer(partners_cmd.partners_app, name="partners")
    app.add_typer(partners_cmd.agreements_app, name="agreements")
    app.command("budget")(partners_cmd.budget)

A mistake the operator can fix (a missing agreement, an unknown partner, the broker unreachable)
is printed as one line on stderr with exit code 2, never as a traceback. The API key is printed
exactly once, by `partners add`, on stdout; it is never logged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any, NoReturn

import structlog
import typer
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from mshale_fl.config import Settings, get_settings
from mshale_fl.ledger import budgets as budget_ops
from mshale_fl.ledger._sql import now_utc, utc_date
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms, add_agreement, list_agreements
from mshale_fl.ledger.broker_identity import BrokerAdmin
from mshale_fl.ledger.contributions import contribution_totals
from mshale_fl.ledger.database import open_ledger
from mshale_fl.ledger.errors import LedgerError, NoBudget
from mshale_fl.ledger.identities import identity_key, reset_identity_key
from mshale_fl.ledger.partners import (
    DEFAULT_DATASET_EPSILON,
    DEFAULT_DELTA,
    DEFAULT_EPSILON_PER_MODEL_VERSION,
    get_partner,
    list_partners,
    register_partner,
    revoke_partner,
    set_tier,
)
from mshale_fl.ledger.tables import api_keys
from mshale_fl.logging import configure_logging

partners_app = typer.Typer(
    help="Partner labs: registration, tier, API key, broker user, revocation.", no_args_is_help=True
)
agreements_app = typer.Typer(help="Agreements partners signed: DPA, IRB, Tier 3 training.", no_args_is_help=True)
app = partners_app

EXIT_USER_ERROR = 2
DATE_FORMATS = ["%Y-%m-%d"]


def _fail(message: str, exit_code: int = EXIT_USER_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def _settings() -> Settings:
    settings = get_settings()
    if not structlog.is_configured():
        # Logs go to stderr, so stdout stays clean for --json and for the one-time key.
        configure_logging(settings.log_level)
    return settings


@contextmanager
def _ledger(settings: Settings) -> Iterator[Engine]:
    url = settings.effective_ledger_url
    try:
        engine = open_ledger(url)
    except OperationalError as error:
        _fail(f"cannot open the ledger database at {make_url(url).render_as_string(hide_password=True)}: {error.orig}")
    try:
        yield engine
    except LedgerError as error:
        _fail(str(error), error.exit_code)
    finally:
        engine.dispose()


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


def _echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


@partners_app.command("add")
def add(
    partner_id: str = typer.Argument(..., help="Partner id: lower-case letters, digits, '-'; also its broker user"),
    tier: int = typer.Option(..., "--tier", min=1, max=3, help="Contribution tier 1-3"),
    academic: bool = typer.Option(False, "--academic", help="An academic lab (a DPA may lack attorney review)"),
    name: str = typer.Option(None, "--name", help="Display name (default: the id)", show_default=False),
    dpa_until: datetime = typer.Option(None, "--dpa-until", formats=DATE_FORMATS, help="DPA valid until (inclusive)"),
    dpa_from: datetime = typer.Option(None, "--dpa-from", formats=DATE_FORMATS, help="DPA valid from (default today)"),
    dpa_attorney_reviewed: bool = typer.Option(
        False, "--dpa-attorney-reviewed", help="The DPA was reviewed by an attorney (required unless --academic)"
    ),
    irb_until: datetime = typer.Option(None, "--irb-until", formats=DATE_FORMATS, help="IRB approval valid until"),
    irb_from: datetime = typer.Option(None, "--irb-from", formats=DATE_FORMATS, help="IRB approval valid from"),
    training_until: datetime = typer.Option(
        None, "--training-until", formats=DATE_FORMATS, help="Tier 3 training agreement valid until"
    ),
    training_from: datetime = typer.Option(
        None, "--training-from", formats=DATE_FORMATS, help="Tier 3 training agreement valid from"
    ),
    epsilon: float = typer.Option(
        DEFAULT_EPSILON_PER_MODEL_VERSION, "--epsilon", help="Privacy budget per model version"
    ),
    delta: float = typer.Option(DEFAULT_DELTA, "--delta", help="Delta of every budget"),
    dataset_epsilon: float = typer.Option(
        DEFAULT_DATASET_EPSILON, "--dataset-epsilon", help="Cap across model versions trained on the same data"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the result (including the key) as JSON"),
) -> None:
    """Register a partner: ledger record, agreements, a new API key (shown once) and its broker user."""
    settings = _settings()
    terms = []
    for kind, until, since, reviewed in (
        (AgreementKind.DPA, dpa_until, dpa_from, dpa_attorney_reviewed),
        (AgreementKind.IRB, irb_until, irb_from, False),
        (AgreementKind.TRAINING, training_until, training_from, False),
    ):
        if until is None:
            if since is not None:
                _fail(f"--{kind.value.lower()}-from needs --{kind.value.lower()}-until")
            continue
        terms.append(
            AgreementTerms(kind=kind, valid_until=until.date(), valid_from=_day(since), attorney_reviewed=reviewed)
        )
    with _ledger(settings) as engine, BrokerAdmin.from_settings(settings) as broker:
        registration = register_partner(
            engine,
            partner_id,
            tier=tier,
            broker=broker,
            academic=academic,
            display_name=name,
            agreements=terms,
            epsilon_per_model_version=epsilon,
            delta=delta,
            dataset_epsilon_total=dataset_epsilon,
        )
    api_key = registration.key.api_key.get_secret_value()
    if as_json:
        _echo_json(
            {
                "partner": registration.partner.as_dict(),
                "agreements": [agreement.as_dict() for agreement in registration.agreements],
                "key_id": registration.key.key_id,
                "api_key": api_key,
                "broker_user": partner_id,
                "broker_vhost": broker.vhost,
            }
        )
        return
    partner = registration.partner
    typer.echo(f"registered partner {partner.id} (Tier {partner.tier}{', academic' if partner.academic else ''})")
    typer.echo(f"broker user {partner.id} on vhost {broker.vhost!r}, password derived from the API key")
    typer.echo("API key (shown once; Mishale keeps only a hash, so store it now):")
    typer.echo(api_key)


@partners_app.command("list")
def list_command(as_json: bool = typer.Option(False, "--json", help="JSON instead of a table")) -> None:
    """Every registered partner, with tier and status."""
    settings = _settings()
    with _ledger(settings) as engine, engine.begin() as connection:
        rows = list_partners(connection)
    if as_json:
        _echo_json([partner.as_dict() for partner in rows])
        return
    if not rows:
        typer.echo("no partners registered")
        return
    typer.echo(f"{'id':<32} {'tier':>4} {'academic':>8} {'status':<8} created")
    for partner in rows:
        typer.echo(
            f"{partner.id:<32} {partner.tier:>4} {'yes' if partner.academic else 'no':>8} {partner.status:<8} "
            f"{partner.created_at:%Y-%m-%d}"
        )


@partners_app.command("show")
def show(
    partner_id: str = typer.Argument(..., help="Partner id"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text"),
) -> None:
    """A partner's tier, agreements, status, API key ids and budgets (never the key itself)."""
    settings = _settings()
    with _ledger(settings) as engine, engine.begin() as connection:
        partner = get_partner(connection, partner_id)
        assert partner is not None
        agreements = list_agreements(connection, partner_id)
        budgets = budget_ops.list_budgets(connection, partner_id)
        totals = contribution_totals(connection, partner_id)
        identity = identity_key(connection, partner_id)
        keys = connection.execute(
            select(api_keys.c.key_id, api_keys.c.created_at, api_keys.c.revoked_at)
            .where(api_keys.c.partner_id == partner_id)
            .order_by(api_keys.c.created_at)
        ).all()
    today = utc_date(now_utc())
    data = {
        "partner": partner.as_dict(),
        "agreements": [{**agreement.as_dict(), "active": agreement.active_on(today)} for agreement in agreements],
        "api_keys": [{"key_id": key.key_id, "revoked": key.revoked_at is not None} for key in keys],
        "contributions": totals,
        "budgets": [{key: value for key, value in budget.as_dict().items() if key != "spends"} for budget in budgets],
        "identity_key": None
        if identity is None
        else {
            "public_key": identity.public_key.hex(),
            "fingerprint": identity.fingerprint,
            "registered_at": identity.registered_at.isoformat(),
        },
    }
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"partner {partner.id} ({partner.display_name})")
    typer.echo(f"  tier {partner.tier}, {'academic' if partner.academic else 'non-academic'}, {partner.status}")
    typer.echo(f"  registered {partner.created_at:%Y-%m-%d %H:%M} UTC")
    if partner.revoked_at:
        typer.echo(f"  revoked {partner.revoked_at:%Y-%m-%d %H:%M} UTC")
    typer.echo("  agreements:" if agreements else "  agreements: none")
    for agreement in agreements:
        flags = ["active" if agreement.active_on(today) else "inactive"]
        if agreement.kind is AgreementKind.DPA:
            flags.append("attorney-reviewed" if agreement.attorney_reviewed else "NOT attorney-reviewed")
        typer.echo(
            f"    {agreement.kind.value:<8} {agreement.valid_from} .. {agreement.valid_until}  {', '.join(flags)}"
        )
    typer.echo(
        "  api keys: " + (", ".join(f"{k.key_id}{' (revoked)' if k.revoked_at else ''}" for k in keys) or "none")
    )
    typer.echo(
        "  contributions: "
        + ", ".join(f"{kind} {total['events']} events / {total['items']} items" for kind, total in totals.items())
    )
    typer.echo(
        "  identity key: "
        + (
            f"{identity.fingerprint} (registered {identity.registered_at:%Y-%m-%d %H:%M} UTC)"
            if identity
            else "none yet (registered at the partner's first training round)"
        )
    )
    typer.echo(
        f"  budget defaults: epsilon {partner.epsilon_per_model_version:g} per model version, delta {partner.delta:g}, "
        f"dataset cap {partner.dataset_epsilon_total:g}"
    )
    for budget in budgets:
        typer.echo(
            f"  model version {budget.model_version}: {budget.epsilon_spent:.4g} of {budget.epsilon_total:g} spent, "
            f"{budget.epsilon_remaining:.4g} remaining, {budget.state}"
        )


@partners_app.command("revoke")
def revoke(
    partner_id: str = typer.Argument(..., help="Partner id"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Revoke a partner at once: keys stop working, its broker user and open connections are removed."""
    settings = _settings()
    if not yes and not typer.confirm(f"revoke partner {partner_id}? This cannot be undone"):
        _fail("not revoked")
    with _ledger(settings) as engine, BrokerAdmin.from_settings(settings) as broker:
        revoke_partner(engine, partner_id, broker=broker)
    typer.echo(f"revoked partner {partner_id}: API keys disabled, broker user deleted, connections closed")


@partners_app.command("reset-identity")
def reset_identity(
    partner_id: str = typer.Argument(..., help="Partner id"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation"),
) -> None:
    """Forget a partner's identity key (after it lost or replaced it); its next training round registers the new one.

    Other partners pinned the old key: each of them must also drop the old entry from its
    `identity/<partner-id>.peers.json`, or it will refuse rounds with this partner.
    """
    settings = _settings()
    if not yes and not typer.confirm(f"forget the identity key of {partner_id}?"):
        _fail("not reset")
    with _ledger(settings) as engine, engine.begin() as connection:
        removed = reset_identity_key(connection, partner_id)
    typer.echo(
        f"identity key of {partner_id} forgotten; the next one it presents is registered"
        if removed
        else f"{partner_id} had no identity key registered"
    )


@partners_app.command("set-tier")
def set_tier_command(
    partner_id: str = typer.Argument(..., help="Partner id"),
    tier: int = typer.Argument(..., min=1, max=3, help="New tier 1-3"),
) -> None:
    """Change a partner's tier; a higher tier needs its agreements on record first."""
    settings = _settings()
    with _ledger(settings) as engine, engine.begin() as connection:
        partner = set_tier(connection, partner_id, tier)
    typer.echo(f"partner {partner.id} is now Tier {partner.tier}")


@agreements_app.command("add")
def agreements_add(
    partner_id: str = typer.Argument(..., help="Partner id"),
    kind: AgreementKind = typer.Option(..., "--kind", case_sensitive=False, help="DPA, IRB or TRAINING"),
    until: datetime = typer.Option(..., "--until", formats=DATE_FORMATS, help="Valid until (inclusive)"),
    since: datetime = typer.Option(None, "--from", formats=DATE_FORMATS, help="Valid from (default today)"),
    attorney_reviewed: bool = typer.Option(False, "--attorney-reviewed", help="Reviewed by an attorney"),
) -> None:
    """Record an agreement a partner signed (a renewal is a new agreement; history is kept)."""
    settings = _settings()
    with _ledger(settings) as engine, engine.begin() as connection:
        partner = get_partner(connection, partner_id)
        assert partner is not None
        if not partner.active:
            _fail(f"partner {partner_id!r} is revoked")
        agreement = add_agreement(
            connection,
            partner_id,
            AgreementTerms(
                kind=kind, valid_until=until.date(), valid_from=_day(since), attorney_reviewed=attorney_reviewed
            ),
        )
    typer.echo(f"recorded {agreement.kind.value} for {partner_id}: {agreement.valid_from} .. {agreement.valid_until}")


@agreements_app.command("list")
def agreements_list(
    partner_id: str = typer.Argument(..., help="Partner id"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text"),
) -> None:
    """A partner's agreements, past and present."""
    settings = _settings()
    with _ledger(settings) as engine, engine.begin() as connection:
        get_partner(connection, partner_id)
        agreements = list_agreements(connection, partner_id)
    today = utc_date(now_utc())
    if as_json:
        _echo_json([{**agreement.as_dict(), "active": agreement.active_on(today)} for agreement in agreements])
        return
    if not agreements:
        typer.echo(f"no agreements on record for {partner_id}")
    for agreement in agreements:
        typer.echo(
            f"{agreement.kind.value:<8} {agreement.valid_from} .. {agreement.valid_until}  "
            f"{'active' if agreement.active_on(today) else 'inactive'}"
            f"{'' if agreement.attorney_reviewed else ', not attorney-reviewed'}"
        )


def budget(
    partner_id: str = typer.Option(..., "--partner-id", help="Partner id"),
    model_version: int = typer.Option(None, "--model-version", min=0, help="One model version (default: all)"),
    set_total: float = typer.Option(
        None, "--set-total", help="Operator: set this model version's total epsilon (resumes a paused budget)"
    ),
    dataset_cap: float = typer.Option(None, "--set-dataset-cap", help="Operator: set the cap across model versions"),
    dataset_id: str = typer.Option(budget_ops.DEFAULT_DATASET, "--dataset", help="Dataset the cap applies to"),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text"),
) -> None:
    """Privacy budget of a partner: total, spent, remaining, state and the history of spends."""
    settings = _settings()
    if set_total is not None and model_version is None:
        _fail("--set-total needs --model-version")
    with _ledger(settings) as engine, engine.begin() as connection:
        if dataset_cap is not None:
            budget_ops.set_dataset_cap(connection, partner_id, dataset_cap, dataset_id=dataset_id)
        if set_total is not None:
            budget_ops.set_budget_total(connection, partner_id, model_version, set_total)
        if model_version is not None:
            try:
                reports = [budget_ops.budget_status(connection, partner_id, model_version)]
            except NoBudget as error:
                _fail(f"{error}; it opens at the first training reservation (or set one with --set-total)")
        else:
            reports = budget_ops.list_budgets(connection, partner_id)
        dataset = budget_ops.dataset_status(connection, partner_id, dataset_id)
    if as_json:
        _echo_json(
            {
                "partner_id": partner_id,
                "budgets": [report.as_dict() for report in reports],
                "dataset": dataset.as_dict(),
            }
        )
        return
    typer.echo(
        f"partner {partner_id}, dataset {dataset.dataset_id}: {dataset.epsilon_spent:.4g} of {dataset.epsilon_total:g} "
        f"spent across model versions (delta {dataset.delta:g})"
    )
    if not reports:
        typer.echo("no model-version budgets yet (they open at the first training reservation)")
    for report in reports:
        typer.echo(
            f"model version {report.model_version} [{report.state}"
            f"{f': {report.pause_reason}' if report.pause_reason else ''}]: total {report.epsilon_total:g}, "
            f"spent {report.epsilon_spent:.4g} (committed {report.epsilon_committed:.4g}), "
            f"remaining {report.epsilon_remaining:.4g}, delta {report.delta:g}"
        )
        for spend in report.spends:
            typer.echo(
                f"  {spend.round_id:<24} {spend.status:<9} sigma {spend.mechanism.noise_multiplier:g}, "
                f"q {spend.mechanism.sample_rate:g}, {spend.mechanism.steps} steps, "
                f"{spend.accountant} (opacus {spend.accountant_version}), reserved {spend.reserved_at:%Y-%m-%d %H:%M}"
            )

"""`mshale-fl audit ...`: the log's signing key, independent verification, receipts, and the stream replay."""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from mshale_fl.audit.checkpoint import CheckpointError
from mshale_fl.audit.config import AuditSettings, open_store
from mshale_fl.audit.keys import KeyFileError, create_signing_key, load_signing_key
from mshale_fl.audit.log import LogLayoutError
from mshale_fl.audit.note import KeyFormatError, NoteVerifier
from mshale_fl.audit.reader import ReceiptNotAvailable, receipt_from_store
from mshale_fl.audit.receipts import ReceiptError, verify_receipt
from mshale_fl.audit.stores.base import StoreError
from mshale_fl.audit.verify import verify_log

app = typer.Typer(
    help="The audit transparency log: signing key, verification, inclusion receipts.", no_args_is_help=True
)


class StoreKind(StrEnum):
    local = "local"
    s3 = "s3"


KeyFileOption = Annotated[
    Path | None, typer.Option("--key-file", help="Signing key file (default <MSHALE_HOME>/audit/signing.key)")
]
StoreOption = Annotated[StoreKind | None, typer.Option("--store", help="Where the log is (default MSHALE_AUDIT_STORE)")]
DirOption = Annotated[Path | None, typer.Option("--dir", help="Local store directory")]
BucketOption = Annotated[str | None, typer.Option("--bucket", help="S3 bucket ('{region}' is filled in)")]
RegionOption = Annotated[str | None, typer.Option("--region", help="S3 region")]
PrefixOption = Annotated[str | None, typer.Option("--prefix", help="Key prefix of the log in the bucket")]
EndpointOption = Annotated[str | None, typer.Option("--endpoint-url", help="S3 endpoint (MinIO, moto)")]
VerifierOption = Annotated[
    str | None,
    typer.Option("--verifier-key", help="The log's verifier key <name>+<id>+<key> (default: from the signing key)"),
]
OriginOption = Annotated[str | None, typer.Option("--origin", help="Log origin (default MSHALE_AUDIT_ORIGIN)")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings(**overrides: Any) -> AuditSettings:
    values = {name: value for name, value in overrides.items() if value is not None}
    if isinstance(values.get("store"), StoreKind):
        values["store"] = values["store"].value
    try:
        return AuditSettings(**values)
    except ValueError as exc:
        raise _fail(f"invalid audit settings: {exc}") from None


def _verifier(settings: AuditSettings, key_file: Path | None, verifier_key: str | None) -> NoteVerifier:
    text = verifier_key or settings.verifier_key
    if text:
        try:
            return NoteVerifier.from_key(text)
        except KeyFormatError as exc:
            raise _fail(f"invalid verifier key: {exc}") from None
    try:
        return load_signing_key(key_file or settings.resolved_key_file()).verifier
    except KeyFileError as exc:
        raise _fail(f"{exc} (or pass --verifier-key)") from None


@app.command()
def keygen(
    name: Annotated[str | None, typer.Option("--name", help="Key name = log origin (default MSHALE_AUDIT_ORIGIN)")] = None,
    key_file: KeyFileOption = None,
) -> None:
    """Create the log's Ed25519 signing key (refuses to replace an existing one); print the verifier key."""
    settings = _settings(origin=name)
    path = key_file or settings.resolved_key_file()
    try:
        signer = create_signing_key(path, settings.origin)
    except (KeyFileError, KeyFormatError) as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"signing key written to {path} (keep it secret; back it up)", err=True)
    typer.echo(signer.verifier.to_key())


@app.command()
def pubkey(key_file: KeyFileOption = None) -> None:
    """Print the verifier key (<name>+<key id>+<base64 key>) to give partners and auditors."""
    settings = _settings()
    try:
        signer = load_signing_key(key_file or settings.resolved_key_file())
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    typer.echo(signer.verifier.to_key())


@app.command()
def verify(
    store: StoreOption = None,
    directory: DirOption = None,
    bucket: BucketOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = None,
    endpoint_url: EndpointOption = None,
    verifier_key: VerifierOption = None,
    origin: OriginOption = None,
    key_file: KeyFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute the tree, check every checkpoint and, on S3, every object's version history.

    Exit status 0 when the log verifies, 1 when it does not, 2 on usage or access errors.
    """
    settings = _settings(
        store=store, local_dir=directory, s3_bucket=bucket, s3_region=region, s3_prefix=prefix, s3_endpoint_url=endpoint_url
    )
    verifier = _verifier(settings, key_file, verifier_key)
    report = verify_log(open_store(settings), verifier, origin=origin or verifier.name)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def proof(
    event_id: Annotated[str, typer.Option("--event-id", help="The event to prove")],
    store: StoreOption = None,
    directory: DirOption = None,
    bucket: BucketOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = None,
    endpoint_url: EndpointOption = None,
    verifier_key: VerifierOption = None,
    origin: OriginOption = None,
    key_file: KeyFileOption = None,
) -> None:
    """Print the receipt (record, inclusion proof, signed checkpoint) of one event, as JSON."""
    try:
        wanted = uuid.UUID(event_id)
    except ValueError:
        raise _fail(f"--event-id {event_id!r} is not a UUID") from None
    settings = _settings(
        store=store, local_dir=directory, s3_bucket=bucket, s3_region=region, s3_prefix=prefix, s3_endpoint_url=endpoint_url
    )
    verifier = _verifier(settings, key_file, verifier_key)
    try:
        receipt = receipt_from_store(open_store(settings), verifier, wanted, origin=origin or verifier.name)
        verify_receipt(receipt, verifier, origin=origin or verifier.name)  # never hand out a receipt that fails
    except ReceiptNotAvailable as exc:
        raise _fail(str(exc), code=1) from None
    except (LogLayoutError, ReceiptError, CheckpointError) as exc:
        raise _fail(f"the log is damaged, run `mshale-fl audit verify`: {exc}", code=1) from None
    except StoreError as exc:
        raise _fail(str(exc)) from None
    typer.echo(receipt.to_json())



@app.command()
def replay(
    start: Annotated[
        str,
        typer.Option(
            "--from", help="Where to start in mshale.events.log: first, a stream offset, or an ISO-8601 time with offset"
        ),
    ] = "first",
    store: StoreOption = None,
    directory: DirOption = None,
    bucket: BucketOption = None,
    region: RegionOption = None,
    prefix: PrefixOption = None,
    endpoint_url: EndpointOption = None,
    ledger_url: Annotated[
        str | None,
        typer.Option("--ledger-url", help="Ledger to reconcile budgets with (default MSHALE_LEDGER_URL or <MSHALE_HOME>)"),
    ] = None,
    no_budgets: Annotated[bool, typer.Option("--no-budgets", help="Only compare the stream with the log")] = False,
    grace: Annotated[
        float, typer.Option("--grace", min=0.0, help="Seconds to wait for the audit worker to log the newest events")
    ] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Replay the event stream and check it against the log; then the budgets against the ledger.

    Every event must be in the log once, in stream order, with the same payload hash
    (audit.checkpoint events and repeated publishes of one event id excepted), and, when the
    replay covers the whole log, the rounds charged per partner must be the ledger's committed
    spends. Exit status 0 when everything matches, 1 naming the first mismatch, 2 on usage or
    access errors.
    """
    import asyncio

    from mshale_fl.broker.errors import BrokerError
    from mshale_fl.broker.replay import parse_start
    from mshale_fl.config import get_settings

    try:
        where = parse_start(start)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    if where in ("last", "next"):
        raise _fail(f"--from {where} would replay nothing that is already logged; use first, an offset or a time")
    settings = _settings(
        store=store, local_dir=directory, s3_bucket=bucket, s3_region=region, s3_prefix=prefix, s3_endpoint_url=endpoint_url
    )
    engine = None if no_budgets else _open_ledger_for_audit(ledger_url or get_settings().effective_ledger_url)
    try:
        report = asyncio.run(_replay(get_settings().broker_url, open_store(settings), where, engine, grace))
    except BrokerError as exc:
        raise _fail(str(exc)) from None
    except StoreError as exc:
        raise _fail(str(exc)) from None
    except LogLayoutError as exc:
        raise _fail(f"the log is damaged, run `mshale-fl audit verify`: {exc}", code=1) from None
    finally:
        if engine is not None:
            engine.dispose()
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
    raise typer.Exit(0 if report.ok else 1)


def _open_ledger_for_audit(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from mshale_fl.ledger import open_ledger

    try:
        parsed = make_url(url)
    except Exception:
        raise _fail(f"--ledger-url {url!r} is not a database URL") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        raise _fail(f"no ledger at {parsed.database}; pass --ledger-url, or --no-budgets to skip the budget check")
    try:
        return open_ledger(url)
    except SQLAlchemyError as exc:
        raise _fail(f"cannot open the ledger: {str(exc).splitlines()[0]}") from None


async def _replay(broker_url: str, store: Any, start: Any, engine: Any, grace: float) -> Any:
    from mshale_fl.agents.mishale.audit_replay import replay_audit
    from mshale_fl.broker import connect

    connection = await connect(broker_url, robust=False, name="mshale-fl audit replay")
    try:
        return await replay_audit(connection, store, start, ledger=engine, grace=grace)
    finally:
        await connection.close()

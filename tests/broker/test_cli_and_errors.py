"""The CLI commands and the one-line error for a broker that is not there."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from mshale_fl.broker import BrokerUnavailableError, Publisher, connect, declare_topology, redact_url
from mshale_fl.cli.broker_cmd import broker_app, events_app
from mshale_fl.testing.samples import sample_event

UNREACHABLE = "amqp://guest:s3cret@127.0.0.1:1/"


async def test_an_unreachable_broker_is_one_clear_line_without_the_password(capfd) -> None:
    with pytest.raises(BrokerUnavailableError) as caught:
        await connect(UNREACHABLE)
    message = str(caught.value)
    assert "\n" not in message
    assert "amqp://guest:***@127.0.0.1:1/" in message
    assert "s3cret" not in message
    assert "rabbitmq-server -detached" in message
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""  # no library noise around the one line


@pytest.mark.rabbitmq
async def test_wrong_credentials_and_unknown_vhost_say_what_to_check(broker_url: str) -> None:
    with pytest.raises(BrokerUnavailableError, match="check the user name and password"):
        await connect(broker_url.replace("guest:guest@", "guest:wrong@"))
    with pytest.raises(BrokerUnavailableError, match="virtual host 'no-such-vhost'.*rabbitmqctl list_vhosts"):
        await connect(broker_url.rsplit("/", 1)[0] + "/no-such-vhost")


def test_cli_prints_the_broker_error_as_one_line_and_exits_2() -> None:
    result = CliRunner().invoke(events_app, ["tail", "--from", "first", "--url", UNREACHABLE])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/")
    assert "Traceback" not in result.output


def test_redact_url_keeps_everything_but_the_password() -> None:
    assert redact_url("amqp://lab-a:pw@broker.example:5671/prod?heartbeat=5") == "amqp://lab-a:***@broker.example:5671/prod?heartbeat=5"
    assert redact_url("amqp://localhost/") == "amqp://localhost/"


@pytest.mark.rabbitmq
def test_declare_then_tail_prints_one_line_per_event(broker_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(broker_app, ["declare", "--url", broker_url])
    assert result.exit_code == 0, result.output
    assert "mshale.events.log" in result.output and "s3cret" not in result.output
    assert runner.invoke(broker_app, ["declare", "--url", broker_url]).exit_code == 0  # idempotent

    events = [sample_event("spec.submitted", partner_id="lab-d"), sample_event("budget.low", partner_id="lab-d")]

    async def publish() -> None:
        connection = await connect(broker_url)
        publisher = await Publisher.open(connection, window=8)
        await publisher.publish_many(events)
        await connection.close()

    asyncio.run(publish())

    result = runner.invoke(events_app, ["tail", "--from", "first", "--url", broker_url])
    assert result.exit_code == 0, result.output
    lines = [line.split("\t") for line in result.output.strip().splitlines()]
    assert [(fields[0], fields[2], fields[3]) for fields in lines] == [
        ("0", "lab-d.spec.submitted", str(events[0].event_id)),
        ("1", "lab-d.budget.low", str(events[1].event_id)),
    ]
    assert lines[0][1] == events[0].occurred_at.isoformat()

    result = runner.invoke(events_app, ["tail", "--from", "1", "--json", "--url", broker_url])
    (line,) = result.output.strip().splitlines()
    assert json.loads(line) == {"offset": 1, "routing_key": "lab-d.budget.low", "event": events[1].model_dump(mode="json")}

    result = runner.invoke(events_app, ["tail", "--from", "first", "--limit", "1", "--url", broker_url])
    assert len(result.output.strip().splitlines()) == 1

    result = runner.invoke(events_app, ["tail", "--from", "yesterday", "--url", broker_url])
    assert result.exit_code == 2 and "--from must be" in result.output


@pytest.mark.rabbitmq
async def test_declare_reports_a_mismatch_as_a_broker_error(broker_url: str) -> None:
    connection = await connect(broker_url, robust=False)
    try:
        await declare_topology(connection, delivery_limit=9)
    finally:
        await connection.close()
    result = await asyncio.to_thread(CliRunner().invoke, broker_app, ["declare", "--url", broker_url])
    assert result.exit_code == 2
    assert "already exists with different settings" in result.output
    assert "x-delivery-limit" in result.output


@pytest.mark.rabbitmq
def test_tail_before_declare_says_to_declare(broker_url: str) -> None:
    result = CliRunner().invoke(events_app, ["tail", "--url", broker_url])
    assert result.exit_code == 2
    assert "run `mshale-fl broker declare` first" in result.output

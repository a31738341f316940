"""docker-compose.yml parses and describes the deployment the design names.

There is no Docker engine here, so the file is checked structurally: the services exist, every
long-running service has a health check, and Mishale workers can be scaled (no fixed name or port).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
WORKERS = ["worker-validate", "worker-ledger", "worker-audit", "worker-predict"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_names_the_design_services(compose: dict) -> None:
    services = compose["services"]
    for name in ["rabbitmq", "postgres", "minio", "server", "partner-agent", *WORKERS]:
        assert name in services, name


@pytest.mark.parametrize("name", ["rabbitmq", "postgres", "minio", "server", "partner-agent", *WORKERS])
def test_long_running_services_have_health_checks(compose: dict, name: str) -> None:
    assert compose["services"][name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", WORKERS)
def test_workers_are_scalable(compose: dict, name: str) -> None:
    service = compose["services"][name]
    assert "container_name" not in service and "ports" not in service
    assert service["command"] == ["worker", name.removeprefix("worker-")]
    assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"


def test_minio_bucket_has_object_lock_in_compliance_mode(compose: dict) -> None:
    entry = compose["services"]["minio-init"]["entrypoint"]
    assert "--with-lock" in entry and "COMPLIANCE" in entry


def test_rabbitmq_image_supports_quorum_queues_and_streams(compose: dict) -> None:
    image = compose["services"]["rabbitmq"]["image"]
    major, minor = (int(part) for part in image.split(":")[1].split("-")[0].split(".")[:2])
    assert (major, minor) >= (3, 9), "streams need RabbitMQ 3.9+"


def test_worker_health_check_command_exists(compose: dict) -> None:
    from typer.testing import CliRunner

    from mshale_fl.cli import app

    command = compose["services"]["worker-ledger"]["healthcheck"]["test"]
    assert command[:2] == ["CMD", "mshale-fl"]
    result = CliRunner().invoke(app, [*command[2:], "--help"])
    assert result.exit_code == 0, result.output

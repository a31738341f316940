from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Federation
from .synthetic import synthetic_data


@pytest.fixture
def federation(broker_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Federation:
    from mshale_fl.agents.partner import client_app

    monkeypatch.setattr(client_app, "load_partner_data", synthetic_data)
    return Federation(broker_url, tmp_path)

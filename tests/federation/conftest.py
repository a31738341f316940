from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Federation


@pytest.fixture
def federation(broker_url: str, tmp_path: Path) -> Federation:
    return Federation(broker_url, tmp_path)

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def wlp_dir() -> Path:
    """The WLP corpus (train and dev splits) in the shared folder beside the checkout."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (root.parent / "shared" / "corpora" / "wlp", root / "shared" / "corpora" / "wlp"):
        if (candidate / "train").is_dir() and (candidate / "dev").is_dir():
            return candidate
    pytest.fail("../shared/corpora/wlp (train and dev) is missing beside the checkout")


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path

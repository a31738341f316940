"""What every panel returns: its data, or why its source is unavailable.

A panel is a function returning a JSON-ready dict. It raises `SourceUnavailable` with a message
that names the source and the fix; `run_panel` turns that (and any unexpected failure) into the
same shape, so one broken source never takes the page down and the page can say what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mshale_fl.logging import get_logger

log = get_logger(__name__)


class SourceUnavailable(Exception):
    """A panel's source cannot be read; the message is shown to the operator as it is."""


def run_panel(name: str, source: str, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`{"ok": True, "source": ..., **data}` or `{"ok": False, "source": ..., "error": ...}`."""
    try:
        data = read()
    except SourceUnavailable as error:
        return {"ok": False, "source": source, "error": f"{name}: {error}"}
    except Exception as error:  # a bug or a surprise in a source: show it, keep the other panels
        log.exception("console.panel_failed", panel=name)
        return {"ok": False, "source": source, "error": f"{name}: unexpected {type(error).__name__}: {error}"}
    return {"ok": True, "source": source, "error": None, **data}


__all__ = ["SourceUnavailable", "run_panel"]

"""`mshale-fl console`: a read-only web page (and `/api/state`) for operators and auditors.

Partners and agreements, training runs with a loss plot, privacy budgets against the pause line,
the latest signed audit checkpoint and its verification, dead-letter counts. Each panel reads its
own source and says what is wrong when that source is unavailable. Decisions: README.md.
"""

from mshale_fl.console.server import ConsoleServer
from mshale_fl.console.sources import ConsoleSources
from mshale_fl.console.state import ConsoleState

__all__ = ["ConsoleServer", "ConsoleSources", "ConsoleState"]

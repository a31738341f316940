"""Fixtures of the Tier 2 submission tests: the Tier 1 fixtures (ledger, partners on a throw-away vhost, observer).

Imported rather than copied, so both tiers register partners and watch the bus the same way.
"""

from tier1.conftest import (  # noqa: F401  (pytest finds fixtures by name in this module)
    admin,
    broker_users,
    engine,
    ledger_url,
    mishale,
    observer,
    register,
    settings,
)

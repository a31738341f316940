"""The ledger: partners, agreements, API keys, contributions and privacy budgets.

Mishale's record of who may send what and how much privacy each partner has spent. Functions take
a SQLAlchemy `Connection` so they compose inside one transaction (the consumer runtime's, or a
command's); `PrivacyBudgets` wraps the budget operations for callers that hold only an `Engine`.
Design notes: README.md beside this file.
"""

from mshale_fl.ledger.access import may_submit, may_train
from mshale_fl.ledger.accounting import Mechanism, epsilon
from mshale_fl.ledger.agreements import Agreement, AgreementKind, AgreementTerms, active_agreements, add_agreement
from mshale_fl.ledger.api_keys import IssuedKey, verify_api_key
from mshale_fl.ledger.broker_identity import BrokerAdmin, broker_password, partner_permissions
from mshale_fl.ledger.budgets import (
    BudgetStatus,
    PrivacyBudgets,
    Spend,
    budget_status,
    commit,
    is_paused,
    mark_started,
    release,
    reserve,
    round_id_for,
    set_budget_total,
    set_dataset_cap,
)
from mshale_fl.ledger.database import open_ledger
from mshale_fl.ledger.errors import (
    BudgetExceeded,
    BudgetPaused,
    LedgerError,
    PermanentLedgerError,
    ReservationNotFound,
    UnknownPartner,
)
from mshale_fl.ledger.handler import LedgerHandler
from mshale_fl.ledger.partners import Partner, get_partner, list_partners, register_partner, revoke_partner
from mshale_fl.ledger.tier_rules import Decision

__all__ = [
    "Agreement",
    "AgreementKind",
    "AgreementTerms",
    "BrokerAdmin",
    "BudgetExceeded",
    "BudgetPaused",
    "BudgetStatus",
    "Decision",
    "IssuedKey",
    "LedgerError",
    "LedgerHandler",
    "Mechanism",
    "Partner",
    "PermanentLedgerError",
    "PrivacyBudgets",
    "ReservationNotFound",
    "Spend",
    "UnknownPartner",
    "active_agreements",
    "add_agreement",
    "broker_password",
    "budget_status",
    "commit",
    "epsilon",
    "get_partner",
    "is_paused",
    "list_partners",
    "mark_started",
    "may_submit",
    "may_train",
    "open_ledger",
    "partner_permissions",
    "register_partner",
    "release",
    "reserve",
    "revoke_partner",
    "round_id_for",
    "set_budget_total",
    "set_dataset_cap",
    "verify_api_key",
]

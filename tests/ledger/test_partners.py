"""Partners, agreements and the tier gate; API keys stored only as slow hashes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from mshale_fl.ledger.access import may_submit
from mshale_fl.ledger.agreements import AgreementKind, AgreementTerms, add_agreement, list_agreements
from mshale_fl.ledger.api_keys import ALGORITHM, issue_api_key, verify_api_key
from mshale_fl.ledger.errors import InvalidPartnerId, PartnerExists, TierRequirementNotMet
from mshale_fl.ledger.partners import create_partner, get_partner, mark_revoked, register_partner, set_tier
from mshale_fl.ledger.tables import api_keys

from .helpers import MakePartner, days, dpa, scan_database_text, training, unique_partner_id

NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    ("tier", "agreements", "academic", "code"),
    [
        (2, [], False, "agreement.dpa_missing"),
        (2, [dpa(reviewed=False)], False, "agreement.dpa_not_reviewed"),
        (2, [dpa(until_days=-2, from_days=-30)], False, "agreement.dpa_inactive"),
        (2, [dpa(until_days=60, from_days=10)], False, "agreement.dpa_inactive"),
        (3, [dpa()], False, "agreement.training_missing"),
        (3, [training(until_days=-1, from_days=-10)], False, "agreement.training_inactive"),
    ],
)
def test_a_tier_without_its_agreement_is_refused_and_nothing_is_written(
    engine: Engine, tier: int, agreements: list[AgreementTerms], academic: bool, code: str
) -> None:
    partner_id = unique_partner_id()
    with pytest.raises(TierRequirementNotMet) as refused:
        register_partner(engine, partner_id, tier=tier, broker=None, academic=academic, agreements=agreements)
    assert refused.value.code == code
    assert f"Tier {tier}" in str(refused.value)
    with engine.begin() as connection:
        assert get_partner(connection, partner_id, required=False) is None
        assert list_agreements(connection, partner_id) == []
        assert connection.execute(select(api_keys).where(api_keys.c.partner_id == partner_id)).first() is None


def test_academic_partner_may_have_a_dpa_without_attorney_review(engine: Engine) -> None:
    registration = register_partner(
        engine, unique_partner_id(), tier=2, broker=None, academic=True, agreements=[dpa(reviewed=False)]
    )
    assert registration.partner.tier == 2
    assert registration.partner.academic
    assert [agreement.attorney_reviewed for agreement in registration.agreements] == [False]
    with engine.begin() as connection:
        assert may_submit(connection, registration.partner.id, 2).allowed


def test_tier_3_needs_a_training_agreement(engine: Engine) -> None:
    registration = register_partner(engine, unique_partner_id(), tier=3, broker=None, agreements=[training()])
    with engine.begin() as connection:
        assert may_submit(connection, registration.partner.id, 3).allowed
        # Tier 3 does not imply a DPA: its vectors (Tier 2) are refused until one is on record.
        decision = may_submit(connection, registration.partner.id, 2)
        assert (decision.allowed, decision.code) == (False, "agreement.dpa_missing")


def test_may_submit_decides_with_a_reason(engine: Engine, make_partner: MakePartner) -> None:
    tier2 = make_partner(tier=2, agreements=[dpa(until_days=30)])
    tier1 = make_partner(tier=1, agreements=[])
    revoked = make_partner(tier=2, agreements=[dpa()])
    with engine.begin() as connection:
        mark_revoked(connection, revoked.id)

        assert may_submit(connection, tier2.id, 2, NOW).allowed
        assert may_submit(connection, tier2.id, 1, NOW).allowed
        expired = may_submit(connection, tier2.id, 2, NOW + timedelta(days=31))
        assert (expired.allowed, expired.code) == (False, "agreement.dpa_inactive")
        assert "expired" in expired.message
        reason = expired.reason(field="tier")
        assert (reason.code, reason.field) == ("agreement.dpa_inactive", "tier")

        not_granted = may_submit(connection, tier1.id, 2, NOW)
        assert (not_granted.allowed, not_granted.code) == (False, "tier.not_granted")
        assert may_submit(connection, revoked.id, 1, NOW).code == "partner.revoked"
        assert may_submit(connection, "lab-nobody", 1, NOW).code == "partner.unknown"


def test_set_tier_needs_the_agreement_first(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=1, agreements=[])
    with engine.begin() as connection, pytest.raises(TierRequirementNotMet):
        set_tier(connection, partner.id, 2)
    with engine.begin() as connection:
        add_agreement(connection, partner.id, AgreementTerms(AgreementKind.DPA, days(90), attorney_reviewed=True))
        assert set_tier(connection, partner.id, 2).tier == 2
        assert may_submit(connection, partner.id, 2).allowed


@pytest.mark.parametrize(
    "partner_id", ["A-upper", "x", "-leading", "has space", "mishale", "guest", "a" * 64, "lab.dot"]
)
def test_invalid_or_reserved_partner_ids_are_refused(engine: Engine, partner_id: str) -> None:
    with engine.begin() as connection, pytest.raises(InvalidPartnerId):
        create_partner(connection, partner_id, tier=1)


def test_partner_ids_are_never_reused(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=1, agreements=[])
    with engine.begin() as connection:
        mark_revoked(connection, partner.id)
    with engine.begin() as connection, pytest.raises(PartnerExists):
        create_partner(connection, partner.id, tier=1)


def test_api_keys_verify_and_are_stored_only_as_slow_hashes(engine: Engine, make_partner: MakePartner) -> None:
    partner = make_partner(tier=1, agreements=[])
    with engine.begin() as connection:
        issued = issue_api_key(connection, partner.id)
        other = issue_api_key(connection, partner.id)
    key = issued.api_key.get_secret_value()
    assert key not in repr(issued)
    with engine.begin() as connection:
        assert verify_api_key(connection, key) == partner.id
        assert verify_api_key(connection, other.api_key.get_secret_value()) == partner.id
        forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
        assert verify_api_key(connection, forged) is None
        assert verify_api_key(connection, "not-a-key") is None
        row = connection.execute(select(api_keys).where(api_keys.c.key_id == issued.key_id)).one()
    assert row.algorithm == ALGORITHM and ALGORITHM.startswith("scrypt$n=32768")
    assert row.key_hash != key and len(bytes.fromhex(row.salt)) == 16
    secret_part = key.rsplit("_", 1)[1]
    stored = scan_database_text(engine)
    assert issued.key_id in stored  # the scan does see the key table
    assert key not in stored
    assert secret_part not in stored

    with engine.begin() as connection:
        mark_revoked(connection, partner.id)
        assert verify_api_key(connection, key) is None

"""The access policy: each tier gets exactly its access; every denial names its reason and its remedy."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from uuid import uuid4

import pytest
from mshale_fl.schemas.payloads import AccessDenied
from sqlalchemy import Engine

from mshale_fl.access.policy import (
    AccessAction,
    AccessPolicy,
    authorize,
    decide_access,
    usage_today,
)
from mshale_fl.ledger.partners import mark_revoked

from .conftest import NOW, dpa

ALL_ACTIONS = list(AccessAction)


def allowed(engine: Engine, partner_id: str, action: AccessAction, **kwargs: object) -> bool:
    with engine.connect() as connection:
        return decide_access(connection, partner_id, action, **kwargs).allowed  # type: ignore[arg-type]


def decide(engine: Engine, partner_id: str, action: AccessAction | str, **kwargs: object):  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        return decide_access(connection, partner_id, action, **kwargs)  # type: ignore[arg-type]


def test_each_tier_gets_exactly_its_access(engine, partner, contribute, publish) -> None:  # type: ignore[no-untyped-def]
    tier1, tier2, tier3 = partner(1), partner(2), partner(3)
    contribute(tier1, "spec")
    contribute(tier2, "vectors", items=50)
    contribute(tier3, "update", model_version=1)
    publish(1, {tier3: 2.5})

    granted = {
        partner_id: {action for action in ALL_ACTIONS if allowed(engine, partner_id, action, model_version=1)}
        for partner_id in (tier1, tier2, tier3)
    }
    assert granted[tier1] == {AccessAction.PREDICT_SPEC}
    assert granted[tier2] == {AccessAction.PREDICT_SPEC, AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH}
    assert granted[tier3] == set(ALL_ACTIONS)

    for action in (AccessAction.PREDICT_VECTORS, AccessAction.PREDICT_BATCH, AccessAction.MODEL_DOWNLOAD):
        denial = decide(engine, tier1, action, model_version=1)
        assert "tier.insufficient" in denial.codes
    denial = decide(engine, tier2, AccessAction.MODEL_DOWNLOAD, model_version=1)
    assert "tier.insufficient" in denial.codes
    assert "Tier 3" in denial.remedy


def test_tier2_quota_is_larger_than_tier1(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    policy = AccessPolicy(daily_items={1: 5, 2: 50, 3: 50})
    tier1, tier2 = partner(1), partner(2)
    contribute(tier1, "spec")
    contribute(tier2, "vectors")
    assert not allowed(engine, tier1, AccessAction.PREDICT_SPEC, items=6, policy=policy)
    assert allowed(engine, tier2, AccessAction.PREDICT_SPEC, items=50, policy=policy)


def test_expired_agreement_is_denied_with_reason_and_remedy(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    partner_id = partner(2, agreements=[dpa(until_days=10)])
    contribute(partner_id, "vectors", at=NOW + timedelta(days=15))
    later = NOW + timedelta(days=20)

    denial = decide(engine, partner_id, AccessAction.PREDICT_VECTORS, at=later)
    assert not denial.allowed
    assert denial.codes == ["agreement.expired"]
    assert "expired on" in denial.reasons[0].message
    assert "renew the DPA" in denial.remedy
    # Tier 1 access needs no agreement, so the same partner still gets spec predictions.
    assert decide(engine, partner_id, AccessAction.PREDICT_SPEC, at=later).allowed
    assert decide(engine, partner_id, AccessAction.PREDICT_VECTORS, at=NOW + timedelta(days=9)).allowed


def test_exhausted_quota_is_denied_until_the_next_utc_day(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    policy = AccessPolicy(daily_items={1: 3, 2: 30, 3: 30})
    partner_id = partner(1)
    contribute(partner_id, "spec")
    noon = datetime.combine(NOW.date(), time(12), tzinfo=UTC)

    with engine.begin() as connection:
        assert decide_access(connection, partner_id, "predict.spec", at=noon, items=3, policy=policy).allowed
        # Deciding charges nothing; only authorize does.
        assert usage_today(connection, partner_id, noon.date()) == 0
        first = authorize(connection, partner_id, "predict.spec", at=noon, items=2, policy=policy)
        assert first.allowed and first.quota_remaining == 1
        assert authorize(connection, partner_id, "predict.spec", at=noon, items=1, policy=policy).allowed
        denial = authorize(connection, partner_id, "predict.spec", at=noon, items=1, policy=policy)
        assert usage_today(connection, partner_id, noon.date()) == 3

    assert denial.codes == ["quota.exhausted"]
    assert "0 remain today" in denial.reasons[0].message
    tomorrow = (noon + timedelta(days=1)).date().isoformat()
    assert f"wait until {tomorrow}T00:00:00+00:00" in denial.remedy
    assert "move to Tier 2" in denial.remedy
    assert allowed(engine, partner_id, AccessAction.PREDICT_SPEC, at=noon + timedelta(days=1), policy=policy)


def test_a_request_larger_than_the_quota_charges_nothing(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    policy = AccessPolicy(daily_items={1: 3, 2: 30, 3: 30})
    partner_id = partner(1)
    contribute(partner_id, "spec")
    with engine.begin() as connection:
        denial = authorize(connection, partner_id, AccessAction.PREDICT_SPEC, items=4, policy=policy)
        assert denial.codes == ["quota.exhausted"]
        assert usage_today(connection, partner_id, datetime.now(UTC).date()) == 0


def test_lapsed_contributor_is_denied_and_the_lapse_is_configurable(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    partner_id = partner(1)
    contribute(partner_id, "spec", at=NOW - timedelta(days=100))

    denial = decide(engine, partner_id, AccessAction.PREDICT_SPEC)
    assert denial.codes == ["contribution.lapsed"]
    assert "more than 90 days" in denial.reasons[0].message
    assert "submit a ProtocolSpec" in denial.remedy
    assert allowed(engine, partner_id, AccessAction.PREDICT_SPEC, policy=AccessPolicy(lapse_after=timedelta(days=120)))

    contribute(partner_id, "spec")
    assert allowed(engine, partner_id, AccessAction.PREDICT_SPEC)


def test_tier2_access_lapses_on_vectors_even_while_specs_keep_coming(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    partner_id = partner(2)
    contribute(partner_id, "spec")
    contribute(partner_id, "vectors", at=NOW - timedelta(days=200))
    assert allowed(engine, partner_id, AccessAction.PREDICT_SPEC)
    assert decide(engine, partner_id, AccessAction.PREDICT_BATCH).codes == ["contribution.lapsed"]


def test_tier3_downloads_only_versions_it_contributed_to(engine, partner, contribute, publish) -> None:  # type: ignore[no-untyped-def]
    alpha, beta = partner(3), partner(3)
    contribute(alpha, "update", model_version=1)
    contribute(beta, "update", model_version=2)
    publish(1, {alpha: 1.0})
    publish(2, {beta: 1.5}, parent=1)
    publish(3, {alpha: 0.5, beta: 0.7}, parent=2)

    def downloadable(partner_id: str) -> list[int]:
        return [v for v in (1, 2, 3) if allowed(engine, partner_id, AccessAction.MODEL_DOWNLOAD, model_version=v)]

    assert downloadable(alpha) == [1, 3]
    assert downloadable(beta) == [2, 3]
    denial = decide(engine, alpha, AccessAction.MODEL_DOWNLOAD, model_version=2)
    assert denial.codes == ["model.not_contributed"]
    assert "helped train" in denial.remedy
    assert decide(engine, alpha, AccessAction.MODEL_DOWNLOAD, model_version=9).codes == ["model.unknown"]
    assert decide(engine, alpha, AccessAction.MODEL_DOWNLOAD).codes == ["model.version_required"]


def test_a_denial_lists_every_reason_and_every_remedy(engine, partner) -> None:  # type: ignore[no-untyped-def]
    partner_id = partner(1)
    denial = decide(engine, partner_id, AccessAction.PREDICT_VECTORS)
    assert denial.codes == ["tier.insufficient", "contribution.none"]
    assert "move to Tier 2" in denial.remedy and "feature vectors" in denial.remedy
    # The reasons fit the access.denied payload of the event contract.
    payload = AccessDenied(
        request_id=uuid4(),
        action=AccessAction.PREDICT_VECTORS.value,
        reasons=[reason.as_reason() for reason in denial.reasons],
        remedy=denial.remedy,
    )
    assert [reason.code for reason in payload.reasons] == denial.codes


def test_unknown_revoked_and_invalid_requests(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    partner_id = partner(1)
    contribute(partner_id, "spec")
    assert decide(engine, "lab-nobody", AccessAction.PREDICT_SPEC).codes == ["partner.unknown"]
    assert decide(engine, partner_id, "predict.everything").codes == ["action.unknown"]
    assert decide(engine, partner_id, AccessAction.PREDICT_SPEC, items=0).codes == ["request.empty"]
    with engine.begin() as connection:
        mark_revoked(connection, partner_id)
    assert decide(engine, partner_id, AccessAction.PREDICT_SPEC).codes == ["partner.revoked"]


@pytest.mark.parametrize("tier", [2, 3])
def test_higher_tiers_keep_spec_predictions_from_update_or_vector_contributions(  # type: ignore[no-untyped-def]
    engine, partner, contribute, tier
) -> None:
    partner_id = partner(tier)
    contribute(partner_id, "vectors" if tier == 2 else "update", model_version=None if tier == 2 else 1)
    assert allowed(engine, partner_id, AccessAction.PREDICT_SPEC)


def test_concurrent_requests_never_exceed_the_quota(engine, partner, contribute) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    policy = AccessPolicy(daily_items={1: 5, 2: 50, 3: 50})
    partner_id = partner(1)
    contribute(partner_id, "spec")

    def request(_: int) -> bool:
        with engine.begin() as connection:
            return authorize(connection, partner_id, AccessAction.PREDICT_SPEC, policy=policy).allowed

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(request, range(12)))
    assert results.count(True) == 5
    with engine.connect() as connection:
        assert usage_today(connection, partner_id, datetime.now(UTC).date()) == 5


def test_download_overview_shows_each_version_and_why(engine, partner, contribute, publish) -> None:  # type: ignore[no-untyped-def]
    from mshale_fl.access.policy import download_overview

    alpha, beta = partner(3), partner(3)
    contribute(alpha, "update", model_version=1)
    publish(1, {alpha: 1.0})
    publish(2, {beta: 1.0}, parent=1)
    with engine.connect() as connection:
        overview = download_overview(connection, alpha)
    assert [(model.version, decision.allowed) for model, decision in overview] == [(1, True), (2, False)]
    assert overview[1][1].codes == ["model.not_contributed"]

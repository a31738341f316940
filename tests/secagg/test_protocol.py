from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, replace

import numpy as np
import pytest

from mshale_fl.secagg.errors import (
    KeySubstitutionError,
    ProtocolStateError,
    TooFewSurvivorsError,
    UnmaskRefusedError,
)
from mshale_fl.secagg.keys import RoundKeys, pairwise_mask_seed
from mshale_fl.secagg.prg import expand_mask
from mshale_fl.secagg.protocol import (
    RoundConfig,
    SecAggClient,
    SecAggServer,
    UnmaskRequest,
    neighbour_graph,
)
from mshale_fl.secagg.quantize import (
    QuantizationConfig,
    dequantize_sum,
    quantize_update,
)
from mshale_fl.secagg.simulation import Dropouts, make_identities, run_round

from .test_prg import CHI2_255_CRITICAL, byte_chi_square

STAGES = (
    "before_advertise",
    "before_share_keys",
    "before_masked_input",
    "before_consistency_check",
    "before_unmask",
)


def cohort(n: int) -> tuple[str, ...]:
    return tuple(f"partner-{i:02d}" for i in range(n))


def random_updates(ids, d, q, rng):
    plain = {
        p: (rng.uniform(-1.5, 1.5, d), int(rng.integers(0, q.max_examples)))
        for p in ids
    }
    encoded = {p: quantize_update(u, n, q, rng) for p, (u, n) in plain.items()}
    return plain, encoded


def assert_sum_matches(total, plain, included, q):
    agg = dequantize_sum(total, q)
    expected = sum(
        (np.clip(plain[p][0], -q.clip, q.clip) * plain[p][1] for p in included),
        np.zeros_like(next(iter(plain.values()))[0]),
    )
    assert agg.total_examples == sum(plain[p][1] for p in included)
    # Each included partner's rounding is off by less than one step per coordinate.
    assert np.abs(agg.weighted_sum - expected).max() <= len(included) / q.scale


def test_no_dropouts_gives_the_plaintext_sum() -> None:
    rng = np.random.default_rng(0)
    ids = cohort(5)
    q = QuantizationConfig(modulus_bits=32, max_examples=100, max_partners=5)
    plain, encoded = random_updates(ids, 50, q, rng)
    cfg = RoundConfig(
        os.urandom(16), ids, threshold=3, vector_length=51, modulus_bits=32
    )
    result = run_round(cfg, encoded)
    assert_sum_matches(result.total, plain, ids, q)


def test_random_cohorts_and_dropouts_at_every_stage_complete_graph() -> None:
    """Succeeds with exactly the masked-input survivors summed iff at least t answer every stage."""
    rng = np.random.default_rng(1)
    pick = random.Random(1)
    outcomes = {"ok": 0, "failed": 0}
    for trial in range(60):
        n = pick.randint(3, 9)
        t = pick.randint(2, n)
        ids = cohort(n)
        q = QuantizationConfig(
            modulus_bits=pick.choice([32, 48]), max_examples=200, max_partners=n
        )
        plain, encoded = random_updates(ids, pick.randint(1, 30), q, rng)
        d = next(iter(encoded.values())).size
        remaining = list(ids)
        drops = {}
        for stage in STAGES:
            k = pick.choice([0, 0, 0, 1, 1, 2])
            gone = set(pick.sample(remaining, min(k, len(remaining))))
            drops[stage] = frozenset(gone)
            remaining = [p for p in remaining if p not in gone]
        cfg = RoundConfig(f"trial-{trial}".encode(), ids, t, d, q.modulus_bits)
        if len(remaining) < t:
            with pytest.raises(TooFewSurvivorsError):
                run_round(cfg, encoded, Dropouts(**drops))
            outcomes["failed"] += 1
            continue
        result = run_round(cfg, encoded, Dropouts(**drops))
        summed = (
            set(ids)
            - drops["before_advertise"]
            - drops["before_share_keys"]
            - drops["before_masked_input"]
        )
        assert result.server.request.survivors == summed
        assert_sum_matches(result.total, plain, summed, q)
        outcomes["ok"] += 1
    # Both branches were exercised (the counts are fixed by the seeded generator).
    assert outcomes["ok"] >= 15 and outcomes["failed"] >= 5, outcomes


def test_secagg_plus_sparse_graph_with_dropouts_at_every_stage() -> None:
    rng = np.random.default_rng(2)
    pick = random.Random(2)
    for trial in range(8):
        ids = cohort(20)
        q = QuantizationConfig(modulus_bits=48, max_examples=100, max_partners=20)
        plain, encoded = random_updates(ids, 20, q, rng)
        # k = 8 neighbours, 9 share holders per partner; 3 dropouts leave every neighbourhood >= 6 >= t.
        gone = pick.sample(ids, 3)
        drops = Dropouts(
            before_advertise={gone[0]},
            before_share_keys={gone[1]},
            before_masked_input={gone[2]},
            before_unmask=frozenset(),
        )
        if trial % 2:
            drops = replace(
                drops, before_masked_input=frozenset(), before_unmask={gone[2]}
            )
        cfg = RoundConfig(f"plus-{trial}".encode(), ids, 4, 21, 48, neighbours=8)
        result = run_round(cfg, encoded, drops)
        summed = set(ids) - {gone[0], gone[1]} - set(drops.before_masked_input)
        assert_sum_matches(result.total, plain, summed, q)


def test_neighbour_graph_is_regular_symmetric_and_seeded() -> None:
    ids = cohort(30)
    graph = neighbour_graph(ids, 6, b"seed-a")
    assert all(len(v) == 6 and p not in v for p, v in graph.items())
    assert all(p in graph[q] for p, v in graph.items() for q in v)
    assert graph == neighbour_graph(ids, 6, b"seed-a")
    assert graph != neighbour_graph(ids, 6, b"seed-b")
    assert all(len(v) == 29 for v in neighbour_graph(ids, None, b"x").values())


def test_sparse_graph_masks_only_with_neighbours() -> None:
    ids = cohort(12)
    cfg = RoundConfig(b"sparse", ids, 3, 4, 32, neighbours=4)
    encoded = {p: np.zeros(4, dtype=np.uint64) for p in ids}
    result = run_round(cfg, encoded)
    graph = cfg.neighbourhoods()
    for p, client in result.clients.items():
        assert client._mask_partners == graph[p]
    assert not result.total.any()


def test_each_partner_receives_only_its_neighbours_keys() -> None:
    ids = cohort(30)
    sparse = run_round(RoundConfig(b"keys", ids, 3, 10, 32, neighbours=4), {p: np.zeros(10, dtype=np.uint64) for p in ids})
    graph = sparse.server.config.neighbourhoods()
    for p in ids:
        assert set(sparse.server.advertisements_for(p)) == graph[p] | {p}
    full = run_round(RoundConfig(b"keys", ids, 3, 10, 32), {p: np.zeros(10, dtype=np.uint64) for p in ids})
    assert set(full.server.advertisements_for(ids[0])) == set(ids)
    # SecAgg+ downloads grow with k, not n: the key lists were most of the complete graph's bytes.
    for p in ids:
        assert sparse.bytes_downloaded[p] < full.bytes_downloaded[p] / 2


@pytest.mark.parametrize("bits", [20, 32, 48])
def test_round_with_timing_charges_every_party_and_sums_views_exactly(bits: int) -> None:
    # 20 bits: 3-byte packed elements; 32: zero-copy 4-byte views at the server; 48: 6-byte packing.
    rng = np.random.default_rng(bits)
    ids = cohort(7)
    q = QuantizationConfig(modulus_bits=bits, max_examples=10, max_partners=7)
    plain, encoded = random_updates(ids, 3000, q, rng)
    cfg = RoundConfig(os.urandom(8), ids, 4, 3001, bits, neighbours=4)
    started = time.process_time()
    result = run_round(cfg, encoded, Dropouts(before_masked_input={ids[2]}), clock=time.process_time)
    elapsed = time.process_time() - started
    summed = set(ids) - {ids[2]}
    assert_sum_matches(result.total, plain, summed, q)
    assert set(result.partner_seconds) == set(ids)
    assert all(result.partner_seconds[p] > 0 for p in ids) and result.server_seconds > 0
    # The dropped partner did no masking: it spent less than anyone who did.
    assert result.partner_seconds[ids[2]] < min(result.partner_seconds[p] for p in summed)
    assert sum(result.partner_seconds.values()) + result.server_seconds <= elapsed
    # Without a clock nothing is timed.
    assert run_round(cfg, encoded).server_seconds == 0.0


@pytest.mark.parametrize("stage", STAGES)
def test_below_threshold_at_any_stage_fails_without_revealing(stage: str) -> None:
    ids = cohort(6)
    cfg = RoundConfig(os.urandom(8), ids, 4, 3, 32)
    encoded = {p: np.arange(3, dtype=np.uint64) for p in ids}
    with pytest.raises(TooFewSurvivorsError, match="threshold 4"):
        run_round(cfg, encoded, Dropouts(**{stage: frozenset(ids[:3])}))


def test_failure_at_unmask_reconstructs_nothing() -> None:
    ids = cohort(6)
    cfg = RoundConfig(b"r", ids, 4, 3, 32)
    identities = make_identities(ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    clients = {p: SecAggClient(p, identities[p], cfg, registry) for p in ids}
    server = SecAggServer(cfg)
    ads = server.collect_advertisements(
        {p: c.advertise_keys() for p, c in clients.items()}
    )
    inboxes = server.relay_shares({p: c.share_keys(ads) for p, c in clients.items()})
    request = server.collect_masked_inputs(
        {
            p: clients[p].mask_input(inboxes[p], np.ones(3, dtype=np.uint64))
            for p in ids[:5]
        }
    )
    request = server.collect_confirmations(
        {p: clients[p].confirm_survivors(request) for p in ids[:5]}
    )
    responses = {p: clients[p].unmask(request) for p in ids[:3]}
    with pytest.raises(TooFewSurvivorsError):
        server.unmask(responses)
    assert (
        server.reconstructed_self_seeds == {}
        and server.reconstructed_masking_keys == {}
    )


@dataclass
class Staged:
    cfg: RoundConfig
    clients: dict[str, SecAggClient]
    server: SecAggServer
    masked: dict[str, np.ndarray]
    secret_inputs: dict[str, np.ndarray]
    request: UnmaskRequest


def _run_to_masked_inputs(n=5, t=3, d=2000, bits=32, late=None):
    ids = cohort(n)
    cfg = RoundConfig(os.urandom(16), ids, t, d, bits)
    identities = make_identities(ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    clients = {p: SecAggClient(p, identities[p], cfg, registry) for p in ids}
    server = SecAggServer(cfg)
    ads = server.collect_advertisements(
        {p: c.advertise_keys() for p, c in clients.items()}
    )
    inboxes = server.relay_shares({p: c.share_keys(ads) for p, c in clients.items()})
    secret_inputs = {p: np.full(d, 7 + i, dtype=np.uint64) for i, p in enumerate(ids)}
    masked = {p: clients[p].mask_input(inboxes[p], secret_inputs[p]) for p in ids}
    on_time = {p: y for p, y in masked.items() if p != late}
    request = server.collect_masked_inputs(on_time)
    return Staged(cfg, clients, server, masked, secret_inputs, request)


def confirm_all(staged: Staged) -> UnmaskRequest:
    signatures = {
        p: staged.clients[p].confirm_survivors(staged.request)
        for p in staged.request.survivors
    }
    return staged.server.collect_confirmations(signatures)


def test_late_partner_is_treated_as_dropped_and_its_update_stays_hidden() -> None:
    """The server ends up holding y_u *and* s_u^SK of a partner whose input arrived late, yet b_u
    stays secret, so what it can compute about x_u is masked by PRG(b_u) and looks uniform."""
    late = "partner-02"
    staged = _run_to_masked_inputs(late=late)
    cfg, clients, server, masked, secret_inputs, request = (
        staged.cfg,
        staged.clients,
        staged.server,
        staged.masked,
        staged.secret_inputs,
        staged.request,
    )
    assert request.dropped == {late}
    request = confirm_all(staged)
    responses = {p: clients[p].unmask(request) for p in request.survivors}
    assert all(late not in r.self_mask_shares for r in responses.values())
    total = server.unmask(responses)
    assert late not in server.reconstructed_self_seeds
    assert set(server.reconstructed_masking_keys) == {late}
    expected = sum(secret_inputs[p] for p in request.survivors) & np.uint64(0xFFFFFFFF)
    assert np.array_equal(total, expected)

    # The best the server can do with the late y_u: strip every pairwise mask with the recovered key.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    key = X25519PrivateKey.from_private_bytes(server.reconstructed_masking_keys[late])
    view = masked[late].copy()
    for peer in cfg.partner_ids:
        if peer == late:
            continue
        seed = pairwise_mask_seed(
            key,
            server.advertisements[peer].masking_public_key,
            cfg.round_id,
            late,
            peer,
        )
        pairwise = expand_mask(seed, cfg.vector_length, cfg.modulus_bits)
        view = view - pairwise if cfg.index(peer) > cfg.index(late) else view + pairwise
    view &= np.uint64(0xFFFFFFFF)
    # What remains is exactly x_u + PRG(b_u): uniform, nothing like the constant input.
    self_mask = expand_mask(
        clients[late]._self_seed, cfg.vector_length, cfg.modulus_bits
    )
    assert np.array_equal(
        view, (secret_inputs[late] + self_mask) & np.uint64(0xFFFFFFFF)
    )
    assert not np.array_equal(view, secret_inputs[late])
    assert byte_chi_square(view, 32) < CHI2_255_CRITICAL


def test_partner_dropped_before_masking_never_has_its_self_mask_rebuilt() -> None:
    ids = cohort(6)
    cfg = RoundConfig(b"r", ids, 3, 5, 32)
    encoded = {p: np.ones(5, dtype=np.uint64) for p in ids}
    result = run_round(
        cfg, encoded, Dropouts(before_masked_input={"partner-01", "partner-04"})
    )
    assert set(result.server.reconstructed_self_seeds) == set(ids) - {
        "partner-01",
        "partner-04",
    }
    assert set(result.server.reconstructed_masking_keys) == {"partner-01", "partner-04"}
    assert "partner-01" not in result.server.masked_inputs


def test_masked_vectors_look_uniform_even_for_constant_inputs() -> None:
    staged = _run_to_masked_inputs(d=20_000)
    # Control: the plain inputs fail the same test, so it can detect structure.
    assert byte_chi_square(staged.secret_inputs["partner-00"], 32) > CHI2_255_CRITICAL
    for y in staged.masked.values():
        assert int(y.max()) < 1 << 32
        assert byte_chi_square(y, 32) < CHI2_255_CRITICAL


def test_client_refuses_to_reveal_both_secrets_of_one_partner() -> None:
    staged = _run_to_masked_inputs()
    request = confirm_all(staged)
    greedy = replace(request, dropped=frozenset({"partner-03"}))
    with pytest.raises(UnmaskRefusedError, match="partner-03"):
        staged.clients["partner-00"].unmask(greedy)
    # Nor can the server ask again with a different claim once a client has answered.
    staged.clients["partner-01"].unmask(request)
    with pytest.raises(ProtocolStateError):
        staged.clients["partner-01"].unmask(
            replace(
                request,
                survivors=frozenset(staged.cfg.partner_ids[1:]),
                dropped=frozenset({"partner-00"}),
            )
        )


def test_split_view_server_cannot_collect_both_secrets_across_clients() -> None:
    """A server telling some clients partner-04 survived and others that it dropped would get b and
    s^SK of partner-04 from different clients; the signed survivor set stops it."""
    staged = _run_to_masked_inputs(n=5, t=3)
    everyone = staged.request.survivors
    without_4 = everyone - {"partner-04"}
    view_a = UnmaskRequest(everyone, frozenset())
    view_b = UnmaskRequest(without_4, frozenset({"partner-04"}))
    sigs_a = {p: staged.clients[p].confirm_survivors(view_a) for p in cohort(3)}
    sigs_b = {p: staged.clients[p].confirm_survivors(view_b) for p in ("partner-03",)}
    # Partner-00..02 will reveal b shares for set A (it has t signatures) ...
    staged.clients["partner-00"].unmask(replace(view_a, confirmations=sigs_a))
    # ... but partner-03 refuses set B, which only it signed, even padded with A's signatures.
    with pytest.raises(UnmaskRefusedError, match="confirmed this survivor set"):
        staged.clients["partner-03"].unmask(
            replace(view_b, confirmations={**sigs_a, **sigs_b})
        )


def test_unmask_request_with_forged_or_missing_confirmations_is_refused() -> None:
    staged = _run_to_masked_inputs()
    request = staged.request
    for p in cohort(5):
        staged.clients[p].confirm_survivors(request)
    with pytest.raises(UnmaskRefusedError, match="only 0"):
        staged.clients["partner-00"].unmask(request)
    forged = {p: b"\x00" * 64 for p in request.survivors}
    with pytest.raises(UnmaskRefusedError, match="only 0"):
        staged.clients["partner-01"].unmask(replace(request, confirmations=forged))


def test_client_refuses_a_survivor_set_below_t() -> None:
    staged = _run_to_masked_inputs()
    small = UnmaskRequest(
        survivors=frozenset({"partner-00", "partner-01"}),
        dropped=frozenset(staged.cfg.partner_ids[2:]),
    )
    with pytest.raises(TooFewSurvivorsError):
        staged.clients["partner-00"].confirm_survivors(small)


def test_substituted_public_key_is_detected_by_clients() -> None:
    ids = cohort(4)
    cfg = RoundConfig(b"r", ids, 3, 2, 32)
    identities = make_identities(ids)
    registry = {p: k.public_key() for p, k in identities.items()}
    clients = {p: SecAggClient(p, identities[p], cfg, registry) for p in ids}
    server = SecAggServer(cfg)
    ads = server.collect_advertisements(
        {p: c.advertise_keys() for p, c in clients.items()}
    )
    # The server swaps partner-02's masking key for one it controls.
    own = RoundKeys.generate().advertise(
        "partner-02", cfg.round_id, identities["partner-03"]
    )
    tampered = dict(
        ads,
        **{
            "partner-02": replace(
                ads["partner-02"], masking_public_key=own.masking_public_key
            )
        },
    )
    with pytest.raises(KeySubstitutionError, match="partner-02"):
        clients["partner-00"].share_keys(tampered)
    # A whole advertisement signed by another partner's identity is rejected too.
    with pytest.raises(KeySubstitutionError):
        clients["partner-01"].share_keys(dict(ads, **{"partner-02": own}))


def test_stages_run_once_and_in_order() -> None:
    ids = cohort(3)
    cfg = RoundConfig(b"r", ids, 2, 2, 32)
    identities = make_identities(ids)
    client = SecAggClient(
        "partner-00",
        identities["partner-00"],
        cfg,
        {p: k.public_key() for p, k in identities.items()},
    )
    with pytest.raises(ProtocolStateError, match="in order"):
        client.mask_input({}, np.zeros(2, dtype=np.uint64))
    client.advertise_keys()
    with pytest.raises(ProtocolStateError):
        client.advertise_keys()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"threshold": 1},
        {"threshold": 6},
        {"neighbours": 3},
        {"neighbours": 5},
        {"partner_ids": ("a", "a", "b")},
    ],
)
def test_invalid_round_configs_raise(kwargs) -> None:
    base = {
        "round_id": b"r",
        "partner_ids": cohort(5),
        "threshold": 3,
        "vector_length": 2,
    }
    with pytest.raises(ValueError):
        RoundConfig(**{**base, **kwargs})

"""The stages of secure aggregation (Bonawitz et al., CCS 2017) as pure client and server objects.

Stages, with the sets of partners the server has heard from at each:
0. advertise keys      -> U1: each client signs its two round public keys (see `keys`).
1. share keys          -> U2: each client Shamir-shares its self-mask seed b_u and its masking private
                              key s_u^SK among its live neighbours, encrypts each neighbour's shares with
                              AES-GCM under a key agreed with that neighbour; the server only relays.
2. masked input        -> U3: y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) mod 2^k,
                              over neighbours v in U2 (those whose shares u received).
3. consistency check   -> U4: each survivor signs the survivor set U3 with its identity key.
4. unmasking           -> U5: given U3 with t signatures, clients reveal shares of b_v for survivors
                              and of s_v^SK for dropped partners (U2 \\ U3); never both for one
                              partner. The server rebuilds the masks and returns sum_{u in U3} x_u.

Neighbours are everyone (Bonawitz) or, with `neighbours=k` (SecAgg+, Bell et al., CCS 2020), a
k-regular graph derived from the public round seed. A partner that drops before sharing keys simply
has no pairwise masks with anyone, so dropouts are survived at every stage while at least t remain.
Below t, clients and server stop with `TooFewSurvivorsError` before revealing anything.

The transport (Flower messages) is not here: every method takes and returns plain values.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from mshale_fl.logging import get_logger
from mshale_fl.secagg import shamir
from mshale_fl.secagg.errors import (
    ProtocolStateError,
    SecAggError,
    ShareError,
    TooFewSurvivorsError,
    UnmaskRefusedError,
)
from mshale_fl.secagg.keys import (
    KeyAdvertisement,
    RoundKeys,
    confirmed_survivors,
    decrypt_from,
    encrypt_for,
    pairwise_aead_key,
    pairwise_mask_seed,
    raw_private,
    raw_public,
    sign_survivors,
    verify_advertisement,
)
from mshale_fl.secagg.prg import SEED_BYTES, MaskAccumulator, modulus_mask

log = get_logger(__name__)


@dataclass(frozen=True)
class RoundConfig:
    """Public parameters of one round, known to every partner and to the server.

    `partner_ids` is the cohort in a fixed order; a partner's Shamir x coordinate is its position + 1
    and the order decides the sign of each pairwise mask. `threshold` is t: the fewest partners (of a
    neighbourhood, with SecAgg+) needed to finish; a higher t resists more colluding partners, a lower
    t more dropouts. `vector_length` counts the appended examples element.
    """

    round_id: bytes
    partner_ids: tuple[str, ...]
    threshold: int
    vector_length: int
    modulus_bits: int = 48
    neighbours: int | None = None  # None: complete graph; k: SecAgg+ k-regular graph

    def __post_init__(self) -> None:
        n = len(self.partner_ids)
        if len(set(self.partner_ids)) != n:
            raise ValueError("partner ids in a round must be distinct")
        modulus_mask(self.modulus_bits)
        if self.neighbours is not None and (
            not 2 <= self.neighbours < n or self.neighbours % 2
        ):
            raise ValueError(
                f"SecAgg+ needs an even neighbour count in 2..{n - 1}, not {self.neighbours}"
            )
        holders = n if self.neighbours is None else self.neighbours + 1
        if not 2 <= self.threshold <= holders:
            raise ValueError(
                f"the threshold must be in 2..{holders} (shares held per partner), not {self.threshold}"
            )
        if self.vector_length < 1:
            raise ValueError("the vector must have at least one element")

    def index(self, partner_id: str) -> int:
        try:
            return self.partner_ids.index(partner_id)
        except ValueError:
            raise ProtocolStateError(
                f"{partner_id!r} is not in this round's cohort"
            ) from None

    def x_of(self, partner_id: str) -> int:
        return self.index(partner_id) + 1

    def neighbourhoods(self) -> dict[str, frozenset[str]]:
        return neighbour_graph(self.partner_ids, self.neighbours, self.round_id)


def neighbour_graph(
    partner_ids: tuple[str, ...], neighbours: int | None, round_seed: bytes
) -> dict[str, frozenset[str]]:
    """Each partner's neighbours (excluding itself); symmetric.

    SecAgg+: place partners on a cycle in an order shuffled by the public round seed and join each to
    the k/2 nearest on either side (a Harary graph), so every partner has exactly k neighbours and
    nobody, the server included, can choose who neighbours whom.
    """
    ids = list(partner_ids)
    if neighbours is None:
        return {p: frozenset(ids) - {p} for p in ids}
    order = sorted(
        ids, key=lambda p: hashlib.sha256(round_seed + b"/order/" + p.encode()).digest()
    )
    n, half = len(order), neighbours // 2
    graph: dict[str, set[str]] = {p: set() for p in ids}
    for i, p in enumerate(order):
        for step in range(1, half + 1):
            q = order[(i + step) % n]
            graph[p].add(q)
            graph[q].add(p)
    return {p: frozenset(v) for p, v in graph.items()}


def _is_unsigned_array(value: object) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "u"


def _require(count: int, threshold: int, stage: str) -> None:
    if count < threshold:
        raise TooFewSurvivorsError(
            f"only {count} partners remain at the {stage} stage, fewer than the threshold {threshold}; "
            "the round ends without revealing any update"
        )


@dataclass(frozen=True)
class UnmaskRequest:
    """The server's claim of who survived (sent masked input) and who dropped, for the last stage."""

    survivors: frozenset[str]
    dropped: frozenset[str]
    # partner -> identity signature of `survivors` (filled in by the consistency check)
    confirmations: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class UnmaskResponse:
    self_mask_shares: Mapping[
        str, bytes
    ]  # partner -> serialised share of b_partner (survivors)
    masking_key_shares: Mapping[
        str, bytes
    ]  # partner -> serialised share of s_partner^SK (dropped)


def _share_plaintext(
    sender: str, recipient: str, b_share: shamir.Share, s_share: shamir.Share
) -> bytes:
    parts = [
        sender.encode(),
        recipient.encode(),
        b_share.to_bytes(),
        s_share.to_bytes(),
    ]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _parse_share_plaintext(data: bytes) -> tuple[str, str, shamir.Share, shamir.Share]:
    parts, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        parts.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    if len(parts) != 4:
        raise ProtocolStateError("a decrypted share message is malformed")
    return (
        parts[0].decode(),
        parts[1].decode(),
        shamir.Share.from_bytes(parts[2]),
        shamir.Share.from_bytes(parts[3]),
    )


class SecAggClient:
    """One partner's side of a round. Call the stage methods in order, each at most once."""

    def __init__(
        self,
        partner_id: str,
        identity_key: Ed25519PrivateKey,
        config: RoundConfig,
        identity_registry: Mapping[str, Ed25519PublicKey],
    ) -> None:
        self.partner_id = partner_id
        self.config = config
        self._identity = identity_key
        self._registry = identity_registry
        self._neighbours = config.neighbourhoods()[partner_id]
        self._keys = RoundKeys.generate()
        self._stage = 0
        self._peer_keys: dict[str, KeyAdvertisement] = {}
        # neighbour -> AES-GCM key agreed in share_keys, reused to decrypt its shares in mask_input
        self._aead_keys: dict[str, bytes] = {}
        self._self_seed = b""
        self._held_b: dict[str, shamir.Share] = {}  # owner -> my share of owner's b
        self._held_s: dict[str, shamir.Share] = {}  # owner -> my share of owner's s^SK
        self._mask_partners: frozenset[str] = frozenset()
        self._confirmed_survivors: frozenset[str] = frozenset()

    def _advance(self, expected: int, name: str) -> None:
        if self._stage != expected:
            raise ProtocolStateError(
                f"{self.partner_id!r} cannot run the {name} stage now (stage {self._stage}, "
                f"expected {expected}); every stage runs once, in order"
            )
        self._stage += 1

    # Stage 0
    def advertise_keys(self) -> KeyAdvertisement:
        self._advance(0, "advertise keys")
        return self._keys.advertise(
            self.partner_id, self.config.round_id, self._identity
        )

    # Stage 1
    def share_keys(
        self, advertisements: Mapping[str, KeyAdvertisement]
    ) -> dict[str, bytes]:
        """Verify neighbours' keys and return one encrypted share message per live neighbour."""
        self._advance(1, "share keys")
        cfg = self.config
        for pid, ad in advertisements.items():
            if pid != ad.partner_id:
                raise ProtocolStateError(
                    f"the advertisement filed under {pid!r} is for {ad.partner_id!r}"
                )
            if pid not in self._neighbours and pid != self.partner_id:
                continue
            if pid not in self._registry:
                raise ProtocolStateError(f"{pid!r} has no registered identity key")
            verify_advertisement(ad, cfg.round_id, self._registry[pid])
            self._peer_keys[pid] = ad
        mine = self._peer_keys.get(self.partner_id)
        own_keys = (
            raw_public(self._keys.encryption_key.public_key()),
            raw_public(self._keys.masking_key.public_key()),
        )
        if (
            mine is None
            or (mine.encryption_public_key, mine.masking_public_key) != own_keys
        ):
            raise ProtocolStateError(
                "the server did not return this partner's own keys unchanged"
            )
        live = sorted(self._peer_keys, key=cfg.index)
        _require(len(live), cfg.threshold, "share keys")
        self._self_seed = os.urandom(SEED_BYTES)
        xs = [cfg.x_of(p) for p in live]
        b_shares = shamir.split_secret(self._self_seed, cfg.threshold, xs)
        s_shares = shamir.split_secret(
            raw_private(self._keys.masking_key), cfg.threshold, xs
        )
        outbox: dict[str, bytes] = {}
        for pid, b_share, s_share in zip(live, b_shares, s_shares, strict=True):
            if pid == self.partner_id:
                self._held_b[pid], self._held_s[pid] = b_share, s_share
                continue
            key = self._aead_keys[pid] = pairwise_aead_key(
                self._keys.encryption_key,
                self._peer_keys[pid].encryption_public_key,
                cfg.round_id,
                self.partner_id,
                pid,
            )
            plaintext = _share_plaintext(self.partner_id, pid, b_share, s_share)
            outbox[pid] = encrypt_for(
                key, cfg.round_id, self.partner_id, pid, plaintext
            )
        return outbox

    # Stage 2
    def mask_input(self, inbox: Mapping[str, bytes], vector: np.ndarray) -> np.ndarray:
        """Decrypt the shares neighbours sent and return the masked vector y_u."""
        self._advance(2, "masked input")
        cfg = self.config
        vector = np.asarray(vector)
        if vector.shape != (cfg.vector_length,) or vector.dtype != np.uint64:
            raise ValueError(
                f"the input must be a uint64 vector of length {cfg.vector_length} (see quantize_update)"
            )
        for sender, ciphertext in inbox.items():
            if sender not in self._peer_keys or sender == self.partner_id:
                raise ProtocolStateError(
                    f"shares arrived from {sender!r}, who is not a live neighbour"
                )
            key = self._aead_keys.get(sender) or pairwise_aead_key(
                self._keys.encryption_key,
                self._peer_keys[sender].encryption_public_key,
                cfg.round_id,
                self.partner_id,
                sender,
            )
            plaintext = decrypt_from(
                key, cfg.round_id, sender, self.partner_id, ciphertext
            )
            from_id, to_id, b_share, s_share = _parse_share_plaintext(plaintext)
            if (from_id, to_id) != (sender, self.partner_id):
                raise ProtocolStateError(
                    "a share message names the wrong sender or recipient"
                )
            if b_share.x != cfg.x_of(self.partner_id) or s_share.x != b_share.x:
                raise ProtocolStateError(
                    f"the shares from {sender!r} are not at this partner's x"
                )
            self._held_b[sender], self._held_s[sender] = b_share, s_share
        self._mask_partners = frozenset(inbox)
        _require(len(self._mask_partners) + 1, cfg.threshold, "masked input")
        y = MaskAccumulator(cfg.vector_length, cfg.modulus_bits)
        y.add_vector(vector)
        y.add_mask(self._self_seed)
        me = cfg.index(self.partner_id)
        for peer in self._mask_partners:
            seed = pairwise_mask_seed(
                self._keys.masking_key,
                self._peer_keys[peer].masking_public_key,
                cfg.round_id,
                self.partner_id,
                peer,
            )
            # Wrapping in the accumulator's word is exact modulo 2^k (2^k divides the word range).
            if cfg.index(peer) > me:
                y.add_mask(seed)
            else:
                y.subtract_mask(seed)
        return y.result()

    # Stage 3
    def confirm_survivors(self, request: UnmaskRequest) -> bytes:
        """Sign the survivor set (Bonawitz's consistency check); a partner signs only one set per round."""
        self._advance(3, "consistency check")
        if self.partner_id not in request.survivors:
            raise UnmaskRefusedError(
                "this partner sent its masked input but is not listed as a survivor"
            )
        _require(len(request.survivors), self.config.threshold, "consistency check")
        self._confirmed_survivors = frozenset(request.survivors)
        return sign_survivors(
            self._identity, self.config.round_id, self._confirmed_survivors
        )

    # Stage 4
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal b shares for survivors and s^SK shares for dropped partners, never both for one.

        The survivor set must be the one this partner signed and carry at least t valid signatures
        from its members, so a server cannot tell different partners different survivor sets (which
        would let it collect both b_v and s_v^SK of one partner from different clients).
        """
        self._advance(4, "unmasking")
        both = request.survivors & request.dropped
        if both:
            raise UnmaskRefusedError(
                f"the server asked to unmask {sorted(both)} as both survivors and dropped; revealing "
                "both secrets would expose their updates, so this partner refuses"
            )
        if self.partner_id not in request.survivors:
            raise UnmaskRefusedError(
                "this partner sent its masked input but is not listed as a survivor"
            )
        _require(len(request.survivors), self.config.threshold, "unmasking")
        if request.survivors != self._confirmed_survivors:
            raise UnmaskRefusedError(
                "the survivor set to unmask differs from the one this partner confirmed"
            )
        confirmed_by = confirmed_survivors(
            request.confirmations,
            self.config.round_id,
            request.survivors,
            self._registry,
            enough=self.config.threshold,
        )
        if len(confirmed_by) < self.config.threshold:
            raise UnmaskRefusedError(
                f"only {len(confirmed_by)} survivors confirmed this survivor set, fewer than the "
                f"threshold {self.config.threshold}; this partner reveals nothing"
            )
        relevant_survivors = request.survivors & set(self._held_b)
        return UnmaskResponse(
            self_mask_shares={
                p: self._held_b[p].to_bytes() for p in relevant_survivors
            },
            masking_key_shares={
                p: self._held_s[p].to_bytes()
                for p in request.dropped & set(self._held_s)
            },
        )


@dataclass
class SecAggServer:
    """The coordinator's side: relays, tracks who is still in, and removes the masks at the end."""

    config: RoundConfig
    advertisements: dict[str, KeyAdvertisement] = field(default_factory=dict)
    share_senders: frozenset[str] = frozenset()
    relayed: dict[str, frozenset[str]] = field(
        default_factory=dict
    )  # sender -> recipients
    masked_inputs: dict[str, np.ndarray] = field(default_factory=dict)
    request: UnmaskRequest | None = None
    reconstructed_self_seeds: dict[str, bytes] = field(default_factory=dict)
    reconstructed_masking_keys: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        cfg = self.config
        log.info(
            "secagg.round.configured",
            round_id=cfg.round_id.hex(),
            partners=len(cfg.partner_ids),
            threshold=cfg.threshold,
            neighbours=cfg.neighbours,
            modulus_bits=cfg.modulus_bits,
            vector_length=cfg.vector_length,
        )

    def collect_advertisements(
        self, advertisements: Mapping[str, KeyAdvertisement]
    ) -> dict[str, KeyAdvertisement]:
        """Stage 0 -> 1: record U1 and return what every client receives."""
        for pid in advertisements:
            self.config.index(pid)
        self.advertisements = dict(advertisements)
        self._log_stage("advertise keys", self.advertisements)
        _require(len(self.advertisements), self.config.threshold, "advertise keys")
        return dict(self.advertisements)

    def advertisements_for(self, partner_id: str) -> dict[str, KeyAdvertisement]:
        """What `partner_id` needs of U1: its own advertisement and its neighbours'.

        With SecAgg+ a client reads only its k neighbours' keys, so sending it just those keeps the
        download at O(k) instead of O(n); with the complete graph this is all of U1.
        """
        wanted = self._neighbourhoods[partner_id] | {partner_id}
        return {p: ad for p, ad in self.advertisements.items() if p in wanted}

    @functools.cached_property
    def _neighbourhoods(self) -> dict[str, frozenset[str]]:
        return self.config.neighbourhoods()

    def relay_shares(
        self, outboxes: Mapping[str, Mapping[str, bytes]]
    ) -> dict[str, dict[str, bytes]]:
        """Stage 1 -> 2: record U2 and route each ciphertext to its recipient (the server cannot read it)."""
        senders = {p for p in outboxes if p in self.advertisements}
        self.share_senders = frozenset(senders)
        self._log_stage("share keys", senders)
        _require(len(senders), self.config.threshold, "share keys")
        inboxes: dict[str, dict[str, bytes]] = {p: {} for p in senders}
        for sender in senders:
            recipients = set(outboxes[sender]) & senders
            self.relayed[sender] = frozenset(recipients)
            for recipient in recipients:
                inboxes[recipient][sender] = outboxes[sender][recipient]
        return inboxes

    def collect_masked_inputs(self, masked: Mapping[str, np.ndarray]) -> UnmaskRequest:
        """Stage 2 -> 3: record U3 (survivors) and name the dropped partners of U2."""
        cfg = self.config
        # Unsigned vectors are kept as given (e.g. zero-copy views from `wire.decode_vector_view`):
        # only their sum modulo 2^k is ever used. Anything else is read as uint64, as before.
        inputs = {
            p: y if _is_unsigned_array(y) else np.asarray(y, dtype=np.uint64)
            for p, y in masked.items()
            if p in self.share_senders
        }
        for p, y in inputs.items():
            if y.shape != (cfg.vector_length,):
                raise ProtocolStateError(
                    f"the masked input of {p!r} has shape {y.shape}"
                )
        self.masked_inputs = inputs
        self._log_stage("masked input", inputs)
        _require(len(inputs), cfg.threshold, "masked input")
        survivors = frozenset(inputs)
        self.request = UnmaskRequest(
            survivors=survivors, dropped=self.share_senders - survivors
        )
        return self.request

    def collect_confirmations(self, signatures: Mapping[str, bytes]) -> UnmaskRequest:
        """Stage 3 -> 4: attach the survivors' signatures of the survivor set to the unmask request."""
        if self.request is None:
            raise ProtocolStateError("confirmations collected before the masked inputs")
        confirmations = {
            p: sig for p, sig in signatures.items() if p in self.request.survivors
        }
        self._log_stage("consistency check", confirmations)
        _require(len(confirmations), self.config.threshold, "consistency check")
        self.request = replace(self.request, confirmations=confirmations)
        return self.request

    def unmask(self, responses: Mapping[str, UnmaskResponse]) -> np.ndarray:
        """Stage 3: reconstruct b for survivors and s^SK for dropped partners; return the sum mod 2^k."""
        if self.request is None or not self.request.confirmations:
            raise ProtocolStateError(
                "unmask called before the survivors confirmed the survivor set"
            )
        cfg, request = self.config, self.request
        responders = {p: r for p, r in responses.items() if p in request.survivors}
        self._log_stage("unmasking", responders)
        _require(len(responders), cfg.threshold, "unmasking")
        b_shares: dict[str, list[shamir.Share]] = {p: [] for p in request.survivors}
        s_shares: dict[str, list[shamir.Share]] = {p: [] for p in request.dropped}
        for response in responders.values():
            for owner, data in response.self_mask_shares.items():
                if owner in b_shares:
                    b_shares[owner].append(shamir.Share.from_bytes(data))
            for owner, data in response.masking_key_shares.items():
                if owner in s_shares:
                    s_shares[owner].append(shamir.Share.from_bytes(data))
        # Check every secret is recoverable before reconstructing any, so a failed round reveals nothing.
        for owner, shares in [*b_shares.items(), *s_shares.items()]:
            _require(len(shares), cfg.threshold, f"unmasking (shares of {owner!r})")
        try:
            self.reconstructed_self_seeds = {
                p: shamir.reconstruct_secret(s) for p, s in b_shares.items()
            }
            self.reconstructed_masking_keys = {
                p: shamir.reconstruct_secret(s) for p, s in s_shares.items()
            }
        except ShareError as exc:
            raise SecAggError(f"a partner sent a corrupted share: {exc}") from None
        return self._remove_masks()

    def _remove_masks(self) -> np.ndarray:
        cfg, request = self.config, self.request
        assert request is not None
        total = MaskAccumulator(cfg.vector_length, cfg.modulus_bits)
        for y in self.masked_inputs.values():
            total.add_vector(y)
        for seed in self.reconstructed_self_seeds.values():
            total.subtract_mask(seed)
        for dropped, raw_key in self.reconstructed_masking_keys.items():
            key = X25519PrivateKey.from_private_bytes(raw_key)
            for survivor in request.survivors:
                # The survivor masked with `dropped` exactly when it received its shares.
                if survivor not in self.relayed.get(dropped, ()):
                    continue
                seed = pairwise_mask_seed(
                    key,
                    self.advertisements[survivor].masking_public_key,
                    cfg.round_id,
                    dropped,
                    survivor,
                )
                # Survivor v added +PRG(s_uv) if u > v and -PRG if u < v: undo its sign.
                if cfg.index(dropped) > cfg.index(survivor):
                    total.subtract_mask(seed)
                else:
                    total.add_mask(seed)
        log.info(
            "secagg.round.unmasked",
            round_id=cfg.round_id.hex(),
            survivors=len(request.survivors),
            dropped=len(request.dropped),
        )
        return total.result()

    def _log_stage(self, stage: str, present: Mapping | set) -> None:
        log.info(
            "secagg.stage",
            round_id=self.config.round_id.hex(),
            stage=stage,
            present=len(present),
            threshold=self.config.threshold,
        )

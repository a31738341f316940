"""The receipt RPC (schemas/rpc.py) under fuzzing, on both sides.

Mishale side: `answer_receipt_request` gets raw bodies from any partner; it must always answer
with a `ReceiptReply` (`bad_request` for what does not parse, `not_found` for an event that is
not the requester's), never raise. Partner side: a reply is not trusted; whatever a receipt holds,
`Receipt.from_dict` and `verify_receipt` raise `ReceiptError` and nothing else, and any change to
a genuine receipt is caught.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pydantic import ValidationError

from mshale_fl.audit.appender import AuditAppender
from mshale_fl.audit.note import NoteSigner
from mshale_fl.audit.receipt_rpc import answer_receipt_request
from mshale_fl.audit.receipts import Receipt, ReceiptError, verify_receipt
from mshale_fl.audit.stores.local import LocalStore
from mshale_fl.schemas.rpc import ReceiptReply, ReceiptRequest
from mshale_fl.testing.samples import sample_event

from .budget import budget

ORIGIN = "mshale.test/hostile-rpc"
SIGNER = NoteSigner.generate(ORIGIN)
OWNER, OTHER = "lab-a", "lab-b"
EVENTS = [sample_event("spec.submitted", seed, partner_id=OWNER if seed % 2 else OTHER) for seed in range(6)]
OWN_EVENT = EVENTS[1]


@pytest.fixture(scope="module")
def appender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditAppender]:
    """A log holding six events, three of OWNER's (one for the module: hypothesis examples share it)."""
    folder = tmp_path_factory.mktemp("rpc-log")
    appender = AuditAppender(LocalStore(folder / "log"), SIGNER, index_path=folder / "index.sqlite3")
    appender.append_batch(EVENTS)
    yield appender
    appender.close()


requests = st.fixed_dictionaries(
    {},
    optional={
        "v": st.sampled_from([1, 2, 0, "1", True, None]),
        "event_id": st.sampled_from([str(OWN_EVENT.event_id), str(EVENTS[0].event_id), str(uuid.uuid4()), "", "x" * 40,
                                     OWN_EVENT.event_id.hex, 7]),
        "known_size": st.one_of(st.integers(-5, 10), st.just(10**40), st.just(-(10**40)), st.none(), st.floats(),
                                st.text(max_size=5)),
        "extra": st.text(max_size=10),
    },
)  # fmt: skip


@given(body=st.one_of(st.binary(max_size=512), requests.map(lambda r: json.dumps(r).encode())),
       requester=st.sampled_from([OWNER, OTHER, None, "", "guest"]))  # fmt: skip
@example(body=b"[" * 100_000 + b"]" * 100_000, requester=OWNER)
@example(body=json.dumps({"v": 1, "event_id": str(OWN_EVENT.event_id), "known_size": 10**40}).encode(), requester=OWNER)
@budget(150)
def test_the_responder_always_answers_and_only_the_owner_gets_a_receipt(
    appender: AuditAppender, body: bytes, requester: str | None
) -> None:
    reply = answer_receipt_request(appender, requester, body)
    assert isinstance(reply, ReceiptReply)
    ReceiptReply.model_validate_json(reply.model_dump_json())  # what goes back is a valid reply
    try:
        request = ReceiptRequest.model_validate_json(body)
    except ValidationError:
        assert reply.status == "bad_request" and reply.detail
        return
    if not requester:
        assert reply.status == "refused"
    elif reply.status == "ok":
        assert requester == OWNER and request.event_id in {e.event_id for e in EVENTS if e.partner_id == OWNER}
    else:
        assert reply.status == "not_found", reply


@pytest.mark.parametrize("model", [ReceiptRequest, ReceiptReply])
@given(body=st.binary(max_size=512))
@budget(60)
def test_rpc_messages_of_random_bytes_are_validation_errors(model: type, body: bytes) -> None:
    try:
        model.model_validate_json(body)
    except ValidationError:
        return
    # Random bytes that happen to be a valid message (e.g. `{"v":1,"status":"ok"}`) are fine.


def genuine(appender: AuditAppender) -> Receipt:
    receipt = appender.receipt(OWN_EVENT.event_id)
    verify_receipt(receipt, SIGNER.verifier, event=OWN_EVENT, origin=ORIGIN)  # the positive control
    return receipt


receipt_documents = st.dictionaries(
    st.sampled_from(["v", "record", "index", "tree_size", "proof", "checkpoint", "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30),
              st.lists(st.text(max_size=44), max_size=4), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
)  # fmt: skip


@given(receipt_documents)
@example({"v": 1, "record": "{}", "index": 0, "tree_size": 1, "proof": ["not base64!"], "checkpoint": ""})
@example({"v": 1, "record": "\ud800", "index": 0, "tree_size": 1, "proof": [], "checkpoint": ""})
@budget(100)
def test_any_receipt_document_is_verified_or_refused_with_a_receipt_error(data: dict) -> None:
    try:
        receipt = Receipt.from_dict(data)
        verify_receipt(receipt, SIGNER.verifier, origin=ORIGIN)
    except ReceiptError:
        return
    pytest.fail(f"a made-up receipt verified: {data}")


@given(data=st.data())
@budget(100)
def test_any_change_to_a_genuine_receipt_is_caught(appender: AuditAppender, data: st.DataObject) -> None:
    receipt = genuine(appender)
    field = data.draw(st.sampled_from(["record", "index", "tree_size", "proof", "checkpoint"]))
    if field == "record":
        record = bytearray(receipt.record)
        at = data.draw(st.integers(0, len(record) - 1))
        record[at] ^= data.draw(st.integers(1, 255))
        changed = replace(receipt, record=bytes(record))
    elif field in ("index", "tree_size"):
        value = getattr(receipt, field)
        new = data.draw(st.one_of(st.integers(-3, 12), st.just(2**63), st.just(-(2**63))).filter(lambda n: n != value))
        changed = replace(receipt, **{field: new})
    elif field == "proof":
        nodes = list(receipt.proof)
        choice = data.draw(st.sampled_from(["drop", "flip", "extra", "garbage"]))
        if choice == "drop" and nodes:
            nodes.pop(data.draw(st.integers(0, len(nodes) - 1)))
        elif choice == "flip" and nodes:
            at = data.draw(st.integers(0, len(nodes) - 1))
            nodes[at] = bytes([nodes[at][0] ^ 1]) + nodes[at][1:]
        elif choice == "extra":
            nodes.append(bytes(32))
        else:
            nodes = [data.draw(st.binary(max_size=40)) for _ in range(len(nodes) + 1)]
        changed = replace(receipt, proof=tuple(nodes))
    else:
        note = receipt.checkpoint.decode()
        at = data.draw(st.integers(0, len(note) - 2))
        changed = replace(receipt, checkpoint=(note[:at] + chr(ord(note[at]) ^ 1) + note[at + 1 :]).encode())
    if changed == receipt:
        return
    with pytest.raises(ReceiptError):
        verify_receipt(changed, SIGNER.verifier, event=OWN_EVENT, origin=ORIGIN)


def test_a_proof_node_that_is_not_base64_is_a_receipt_error(appender: AuditAppender) -> None:
    document = genuine(appender).to_dict()
    document["proof"] = [base64.b64encode(b"x" * 32).decode()[:-1] + "!"]
    with pytest.raises(ReceiptError, match="malformed receipt"):
        Receipt.from_dict(document)


def test_the_log_is_unchanged_by_the_requests(appender: AuditAppender) -> None:
    """Requests are reads: however many hostile ones came before, the log holds the six events."""
    assert appender.size == len(EVENTS)

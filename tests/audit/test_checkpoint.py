"""Signed notes and checkpoints: the C2SP formats, interoperable vectors, and rejection of forgeries."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from mshale_fl.audit.checkpoint import (
    CheckpointError,
    open_checkpoint,
    parse_checkpoint_text,
    sign_checkpoint,
)
from mshale_fl.audit.merkle import EMPTY_ROOT, MerkleTree, hash_leaf
from mshale_fl.audit.note import (
    KeyFormatError,
    NoteFormatError,
    NoteSigner,
    NoteVerificationError,
    NoteVerifier,
    key_id,
    open_note,
    parse_note,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "signed_note.json").read_text())
GO = VECTORS["go_sumdb_note"]
C2SP = VECTORS["c2sp_signed_note"]


def test_go_sumdb_note_vector_is_reproduced_byte_for_byte() -> None:
    signer = NoteSigner.from_key(GO["signer_key"])
    assert signer.to_key() == GO["signer_key"]
    assert signer.verifier.to_key() == GO["verifier_key"]
    assert signer.sign_text(GO["text"]).decode() == GO["signed_note"]
    note = open_note(GO["signed_note"].encode(), NoteVerifier.from_key(GO["verifier_key"]))
    assert note.text == GO["text"]
    assert [(s.name, s.key_id) for s in note.signatures] == [("PeterNeumann", 0xC74F20A3)]


def test_c2sp_example_note_verifies() -> None:
    verifier = NoteVerifier.from_key(C2SP["verifier_key"])
    assert open_note(C2SP["signed_note"].encode(), verifier).text == "This is an example message.\n"


def test_key_id_is_the_c2sp_formula() -> None:
    signer = NoteSigner.generate("example.com/log")
    public = signer.verifier.public_key
    expected = hashlib.sha256(b"example.com/log\n\x01" + public).digest()[:4]
    assert key_id("example.com/log", public) == int.from_bytes(expected, "big") == signer.key_id


def test_unknown_signatures_are_ignored_but_one_known_is_required() -> None:
    both = (GO["signed_note"] + GO["other_signature_line"]).encode()
    peter = NoteVerifier.from_key(GO["verifier_key"])
    enoch = NoteVerifier.from_key(GO["other_verifier_key"])
    assert [s.name for s in open_note(both, peter).signatures] == ["PeterNeumann"]
    assert [s.name for s in open_note(both, [peter, enoch]).signatures] == ["PeterNeumann", "EnochRoot"]
    with pytest.raises(NoteVerificationError, match="no signature from a trusted key"):
        open_note(GO["signed_note"].encode(), enoch)


def test_a_known_key_with_a_bad_signature_rejects_the_note() -> None:
    peter = NoteVerifier.from_key(GO["verifier_key"])
    altered = GO["signed_note"].replace("problem is.", "problem is!").encode()
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_note(altered, peter)


@pytest.mark.parametrize(
    "mangled",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong algorithm byte
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # truncated
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # upper-case hex
    ],
)
def test_mangled_verifier_keys_are_refused(mangled: str) -> None:
    with pytest.raises(KeyFormatError):
        NoteVerifier.from_key(mangled)


@pytest.mark.parametrize(
    "note",
    [
        b"no blank line\n\xe2\x80\x94 a AAAAAAA=\n",
        b"text\n\n",  # no signatures
        b"text\n\n- a AAAAAAAAAA==\n",  # hyphen, not em dash
        b"text\r\n\n\xe2\x80\x94 a AAAAAAAAAA==\n",  # control character
        b"text\n\n\xe2\x80\x94 a AAAAAAAAAA==",  # no final newline
        b"\xff\n\n\xe2\x80\x94 a AAAAAAAAAA==\n",  # not UTF-8
    ],
)
def test_malformed_notes_are_refused(note: bytes) -> None:
    with pytest.raises(NoteFormatError):
        parse_note(note)


# -- checkpoints -------------------------------------------------------------------------------------


@pytest.fixture
def log_signer() -> NoteSigner:
    return NoteSigner.generate("mshale.test/audit")


def test_checkpoint_format_is_origin_size_base64_root(log_signer: NoteSigner) -> None:
    tree = MerkleTree(hash_leaf(bytes([i])) for i in range(5))
    checkpoint = sign_checkpoint(log_signer, 5, tree.root())
    text, _, signature_line = checkpoint.note.decode().partition("\n\n")
    assert text == f"mshale.test/audit\n5\n{base64.b64encode(tree.root()).decode()}"
    assert signature_line.startswith("\u2014 mshale.test/audit ") and signature_line.endswith("\n")
    blob = base64.b64decode(signature_line.split(" ")[2])
    assert int.from_bytes(blob[:4], "big") == log_signer.key_id and len(blob) == 4 + 64
    opened = open_checkpoint(checkpoint.note, log_signer.verifier)
    assert (opened.origin, opened.size, opened.root) == ("mshale.test/audit", 5, tree.root())


def test_empty_tree_checkpoint(log_signer: NoteSigner) -> None:
    checkpoint = open_checkpoint(sign_checkpoint(log_signer, 0, EMPTY_ROOT).note, log_signer.verifier)
    assert checkpoint.size == 0 and checkpoint.root == EMPTY_ROOT


def test_wrong_key_is_rejected(log_signer: NoteSigner) -> None:
    note = sign_checkpoint(log_signer, 1, EMPTY_ROOT).note
    impostor = NoteSigner.generate("mshale.test/audit")  # same name, other key
    with pytest.raises(CheckpointError, match="no signature from a trusted key"):
        open_checkpoint(note, impostor.verifier)
    forged = impostor.sign_text("mshale.test/audit\n1\n" + base64.b64encode(EMPTY_ROOT).decode() + "\n")
    with pytest.raises(CheckpointError):
        open_checkpoint(forged, log_signer.verifier)


def test_altered_note_is_rejected(log_signer: NoteSigner) -> None:
    note = sign_checkpoint(log_signer, 41, hash_leaf(b"x")).note
    for altered in (
        note.replace(b"\n41\n", b"\n42\n"),
        note.replace(b"mshale.test/audit\n", b"mshale.test/other\n", 1),
        note.replace(b"\n\n", b"\nextension\n\n"),
    ):
        with pytest.raises(CheckpointError):
            open_checkpoint(altered, log_signer.verifier)


def test_checkpoint_of_another_log_is_refused_even_with_the_right_key(log_signer: NoteSigner) -> None:
    note = sign_checkpoint(log_signer, 3, EMPTY_ROOT, origin="mshale.test/other-log").note
    with pytest.raises(CheckpointError, match="is for log"):
        open_checkpoint(note, log_signer.verifier)
    assert open_checkpoint(note, log_signer.verifier, origin="mshale.test/other-log").size == 3


@pytest.mark.parametrize(
    "text",
    [
        "origin\n01\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # leading zero
        "origin\n-1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
        "origin\n1\nAAAA\n",  # root not 32 bytes
        "origin\n1\n",  # no root
        "origin\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\nextension\n",
        "origin\n18446744073709551616\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",  # 2**64
    ],
)
def test_malformed_checkpoint_text_is_refused(text: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint_text(text)


def test_checkpoint_payload_for_the_audit_checkpoint_event(log_signer: NoteSigner) -> None:
    checkpoint = sign_checkpoint(log_signer, 7, hash_leaf(b"y"))
    payload = checkpoint.to_payload()
    assert payload.tree_size == 7 and payload.root_hash == hash_leaf(b"y").hex()
    assert open_checkpoint(payload.note, log_signer.verifier) == checkpoint

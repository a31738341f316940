"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys, and their key encodings.

A note is UTF-8 text ending in a newline, a blank line, then signature lines
`— <key name> <base64(key ID || signature)>`. The key ID is the first four bytes of
SHA-256(key name || 0x0A || 0x01 || public key). Keys travel in the encodings of Go's
golang.org/x/mod/sumdb/note, which every C2SP tool reads:

    verifier key: <name>+<key ID as 8 hex digits>+<base64(0x01 || 32-byte public key)>
    signer key:   PRIVATE+KEY+<name>+<key ID as 8 hex digits>+<base64(0x01 || 32-byte seed)>

Verification follows the spec: signatures from unknown keys are ignored, a signature from a
known key that fails to verify rejects the whole note, and a note with no verified signature
from a known key is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "KeyFormatError",
    "NoteError",
    "NoteFormatError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerificationError",
    "NoteVerifier",
    "SignedNote",
    "key_id",
    "open_note",
    "parse_note",
]

ED25519_TYPE = 0x01
EM_DASH = "\u2014"
MAX_SIGNATURES = 100
"""The spec asks verifiers to accept at least 16 signatures and to bound the number."""
MAX_NOTE_BYTES = 1 << 20

_SIG_LINE = re.compile(r"^\u2014 (\S+) (\S+)$")


class NoteError(ValueError):
    """Base class of every signed-note failure."""


class KeyFormatError(NoteError):
    """A signer or verifier key string is malformed."""


class NoteFormatError(NoteError):
    """The bytes are not a well-formed signed note."""


class NoteVerificationError(NoteError):
    """The note is well formed but not validly signed by a trusted key."""


def _check_key_name(name: str) -> None:
    if not name or any(ch.isspace() or ch == "+" for ch in name):
        raise KeyFormatError(f"key name {name!r} must be non-empty without spaces or '+'")


def key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def strict_b64decode(text: str) -> bytes:
    """Standard base64 that accepts only the one canonical encoding of each byte string.

    Plain decoders ignore the unused low bits of the last character, so several strings decode
    to the same bytes; a flipped bit there would go unnoticed. We refuse all but the canonical one.
    """
    data = base64.b64decode(text, validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return data


def _decode_b64(text: str, what: str) -> bytes:
    try:
        return strict_b64decode(text)
    except (binascii.Error, ValueError) as exc:
        raise KeyFormatError(f"{what} is not valid base64") from exc


class NoteVerifier:
    """The public half: checks signatures made by one Ed25519 key under one name."""

    def __init__(self, name: str, public_key: bytes) -> None:
        _check_key_name(name)
        if len(public_key) != 32:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        self.name = name
        self.public_key = bytes(public_key)
        self.key_id = key_id(name, self.public_key)
        self._key = Ed25519PublicKey.from_public_bytes(self.public_key)

    @classmethod
    def from_key(cls, vkey: str) -> NoteVerifier:
        """Parse `<name>+<8 hex digits>+<base64(0x01 || public key)>`."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3:
            raise KeyFormatError("a verifier key has the form <name>+<key id>+<base64 key>")
        name, hash_text, data_text = parts
        if not re.fullmatch(r"[0-9a-f]{8}", hash_text):
            raise KeyFormatError(f"key id {hash_text!r} must be 8 lower-case hex digits")
        data = _decode_b64(data_text, "verifier key data")
        if len(data) != 33 or data[0] != ED25519_TYPE:
            raise KeyFormatError("verifier key data must be 0x01 followed by a 32-byte Ed25519 public key")
        verifier = cls(name, data[1:])
        if verifier.key_id != int(hash_text, 16):
            raise KeyFormatError(f"key id {hash_text} does not match the name and public key")
        return verifier

    def to_key(self) -> str:
        data = base64.b64encode(bytes([ED25519_TYPE]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id:08x}+{data}"

    def verify(self, text: bytes, signature: bytes) -> bool:
        try:
            self._key.verify(signature, text)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:
        return f"NoteVerifier({self.to_key()!r})"


class NoteSigner:
    """The private half: signs note text as `name` with one Ed25519 key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_key_name(name)
        self.name = name
        self._key = private_key
        public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.verifier = NoteVerifier(name, public)
        self.key_id = self.verifier.key_id

    @classmethod
    def generate(cls, name: str) -> NoteSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, skey: str) -> NoteSigner:
        """Parse `PRIVATE+KEY+<name>+<8 hex digits>+<base64(0x01 || seed)>`."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise KeyFormatError("a signer key has the form PRIVATE+KEY+<name>+<key id>+<base64 key>")
        name, hash_text, data_text = parts[2:]
        if not re.fullmatch(r"[0-9a-f]{8}", hash_text):
            raise KeyFormatError(f"key id {hash_text!r} must be 8 lower-case hex digits")
        data = _decode_b64(data_text, "signer key data")
        if len(data) != 33 or data[0] != ED25519_TYPE:
            raise KeyFormatError("signer key data must be 0x01 followed by a 32-byte Ed25519 seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(data[1:]))
        if signer.key_id != int(hash_text, 16):
            raise KeyFormatError(f"key id {hash_text} does not match the name and key")
        return signer

    def to_key(self) -> str:
        seed = self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        data = base64.b64encode(bytes([ED25519_TYPE]) + seed).decode("ascii")
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{data}"

    def sign_text(self, text: str) -> bytes:
        """Return the complete signed note for `text` (which must end in a newline)."""
        _check_text(text)
        body = text.encode("utf-8")
        signature = self._key.sign(body)
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + signature).decode("ascii")
        return body + b"\n" + f"{EM_DASH} {self.name} {blob}\n".encode()

    def __repr__(self) -> str:  # never print the private key
        return f"NoteSigner(name={self.name!r}, key_id={self.key_id:08x})"


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: int
    signature: bytes


@dataclass(frozen=True)
class SignedNote:
    text: str
    signatures: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    if any(ord(ch) < 0x20 and ch != "\n" for ch in text):
        raise NoteFormatError("note text must not contain control characters other than newline")


def parse_note(data: bytes) -> SignedNote:
    """Split a signed note into its text and signature lines, without verifying anything."""
    if len(data) > MAX_NOTE_BYTES:
        raise NoteFormatError(f"note is {len(data)} bytes; the limit is {MAX_NOTE_BYTES}")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteFormatError("note is not valid UTF-8") from exc
    if any(ord(ch) < 0x20 and ch != "\n" for ch in decoded):
        raise NoteFormatError("note contains control characters other than newline")
    if not decoded.endswith("\n"):
        raise NoteFormatError("note does not end with a newline")
    # The text is separated from the signatures by the last blank line.
    split = decoded.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no blank line before its signatures")
    text, sig_block = decoded[: split + 1], decoded[split + 2 :]
    lines = sig_block.split("\n")[:-1]
    if not lines:
        raise NoteFormatError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has {len(lines)} signatures; at most {MAX_SIGNATURES} are accepted")
    signatures = []
    for number, line in enumerate(lines, start=1):
        match = _SIG_LINE.match(line)
        if not match:
            raise NoteFormatError(f"signature line {number} is not '— <name> <base64>'")
        name, blob_text = match.groups()
        if "+" in name:
            raise NoteFormatError(f"signature line {number}: key name must not contain '+'")
        try:
            blob = strict_b64decode(blob_text)
        except (binascii.Error, ValueError) as exc:
            raise NoteFormatError(f"signature line {number}: signature is not valid base64") from exc
        if len(blob) < 5:
            raise NoteFormatError(f"signature line {number}: signature is too short")
        signatures.append(NoteSignature(name, int.from_bytes(blob[:4], "big"), blob[4:]))
    return SignedNote(text, tuple(signatures))


def open_note(data: bytes, verifiers: NoteVerifier | list[NoteVerifier]) -> SignedNote:
    """Parse and verify a note; return it with only the signatures of known keys that verified.

    Raises `NoteFormatError` for malformed bytes and `NoteVerificationError` when a known key's
    signature fails or when no known key signed the note.
    """
    known = {(v.name, v.key_id): v for v in ([verifiers] if isinstance(verifiers, NoteVerifier) else verifiers)}
    note = parse_note(data)
    body = note.text.encode("utf-8")
    verified = []
    for signature in note.signatures:
        verifier = known.get((signature.name, signature.key_id))
        if verifier is None:
            continue  # unknown keys are ignored, as the spec requires
        if not verifier.verify(body, signature.signature):
            raise NoteVerificationError(f"the signature of {signature.name} ({signature.key_id:08x}) does not verify")
        verified.append(signature)
    if not verified:
        names = ", ".join(f"{name}+{kid:08x}" for name, kid in known) or "none"
        raise NoteVerificationError(f"the note carries no signature from a trusted key (trusted: {names})")
    return SignedNote(note.text, tuple(verified))

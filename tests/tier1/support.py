"""Helpers of the Tier 1 tests: a corpus of every label, the words a published byte may hold, workers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mshale_fl.broker import Processor, run_worker
from mshale_fl.config import Settings
from mshale_fl.schemas import EVENT_TYPES, vocabulary
from mshale_fl.schemas import payloads
from mshale_fl.schemas.events import EventEnvelope
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec, Quantity, Step
from mshale_fl.testing.samples import sample_spec

WORD = re.compile(r"[^\W\d_]{4,}")
UUID_OR_HASH = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{64}")
TRANSPORT_CONSTANTS = {"application/json", "mshale-fl"}
"""content_type and app_id of every event: fixed by the publisher, never derived from a protocol."""


def unique_partner_id() -> str:
    # Digits only after a 3-letter prefix: no word of 4+ letters, so the id can never look like a leak.
    return f"lab-{uuid.uuid4().int % 10**12:012d}"


def layout_vector(seed: int = 0) -> FeatureVector:
    """A vector the featurizer produces (the validator refuses `sample_vector`'s k/7 values: off the layout's grid)."""
    from mshale_fl.agents.partner.featurize import featurize

    return featurize(sample_spec(seed))


def closed_vocabulary_words() -> set[str]:
    """Every word the contract itself can put on the wire: enum values, field names, event types, constants."""
    names: set[str] = {"true", "false", "null", *EVENT_TYPES, *TRANSPORT_CONSTANTS}
    for member in vars(vocabulary).values():
        if isinstance(member, type) and issubclass(member, Enum):
            names.update(str(item.value) for item in member)
    models: list[type[BaseModel]] = [ProtocolSpec, Step, Quantity, EventEnvelope]
    models += [value for value in vars(payloads).values() if isinstance(value, type) and issubclass(value, BaseModel)]
    for model in models:
        names.update(model.model_fields)
    return {word.lower() for name in names for word in WORD.findall(name)}


ALLOWED_WORDS = closed_vocabulary_words()


def words(text: str) -> set[str]:
    return {word.lower() for word in WORD.findall(text)}


def published_words(body: bytes) -> set[str]:
    """Words of 4+ letters in a published message, after removing ids and digests (hex by construction)."""
    return words(UUID_OR_HASH.sub(b" ", body).decode("utf-8", errors="replace"))


# -- a corpus with every label -------------------------------------------------------------------

CONFIG = """[sensitivity]
rules = [{glob = "published/**", label = "published"}, {glob = "internal/**", label = "internal"}]
"""

OWN_PUBLISHED = """# Quillwort plasmid miniprep
1. Pellet 1.5 ml of overnight E. coli culture at 14,000 x g for 1 min.
2. Resuspend the pellet in 250 µl Marrowfield resuspension buffer with RNase A.
3. Add 250 µl lysis buffer and invert gently 6 times; incubate at room temperature for 5 min.
4. Add 350 µl neutralisation buffer and mix by inverting.
5. Centrifuge at 14,000 x g for 10 min and transfer the supernatant to a spin column.
6. Wash with 500 µl of 80% ethanol and elute in 50 µl water at 55-60 °C.
"""

FULL_IP = """---
sensitivity: full-ip
---
# Kestrelwood rapid lysis (proprietary)
1. Add 100 µl of Kestrelwood buffer KB-7 to the cell pellet.
2. Vortex the Zanthoxylum extract for 30 s and incubate at 42 °C for 7 min.
3. Centrifuge at 16,000 x g for 2 min and keep the Brackenridge supernatant on ice.
"""

EFFICIENCY = """---
sensitivity: efficiency
outcome: 0.91
---
# Thistlebrook transfection with optimised lipid ratio
1. Seed 200,000 HEK293 cells per well in a 6-well plate.
2. Dilute 2 µg plasmid DNA in 100 µl Opti-MEM and mix with 6 µl Thistlebrook reagent.
3. Incubate for 15 min at room temperature and add dropwise to the cells.
"""

INTERNAL = """# Larchmont bead cleanup
1. Add 1.8 volumes of Larchmont beads to the PCR reaction and mix by pipetting.
2. Incubate for 5 min at room temperature, place on the magnet and discard the supernatant.
3. Wash twice with 200 µl 70% ethanol and elute in 20 µl water.
"""

UNLABELLED = """# Heronsgate gel extraction
1. Excise the band with a clean scalpel under blue light.
2. Dissolve the gel slice in 3 volumes of Heronsgate solubilisation buffer at 50 °C for 10 min.
3. Centrifuge through the column at 13,000 rpm for 1 min.
"""

SIMPLE_JSON = """{"title": "Fernhollow agarose gel", "sensitivity": "published",
 "steps": ["Dissolve 1 g agarose in 100 ml TAE buffer by heating in a microwave.",
           "Cool to 55 C, add 5 ul stain and pour into the Fernhollow tray.",
           "Run the gel at 100 V for 40 min."]}
"""


SHARED_DIR = Path(__file__).resolve().parents[2].parent / "shared"
"""The project's shared folder beside the checkout (what the `shared_dir` fixture finds), for module fixtures."""


def wlp_texts(shared_dir: Path, count: int) -> list[str]:
    files = sorted((shared_dir / "corpora" / "wlp" / "train").glob("*.txt"))[:count]
    assert len(files) == count, "the WLP corpus is missing"
    return [path.read_text(encoding="utf-8") for path in files]


def build_corpus(root: Path, shared_dir: Path) -> dict[str, str]:
    """A corpus with protocols of every label (own texts and real WLP protocols); returns {source: label}."""
    wlp = wlp_texts(shared_dir, 6)
    files = {
        "mshale.toml": (CONFIG, None),
        "published/quillwort-miniprep.md": (OWN_PUBLISHED, "published"),
        "published/wlp-a.txt": (wlp[0], "published"),
        "published/wlp-b.txt": (wlp[1], "published"),
        "published/fernhollow-gel.json": (SIMPLE_JSON, "published"),
        "internal/larchmont-beads.md": (INTERNAL, "internal"),
        "internal/wlp-c.txt": (wlp[2], "internal"),
        "efficiency-thistlebrook.md": (EFFICIENCY, "efficiency"),
        "efficiency-wlp-d.md": ("---\nsensitivity: efficiency\n---\n" + wlp[3], "efficiency"),
        "secret/kestrelwood-lysis.md": (FULL_IP, "full-ip"),
        "secret/wlp-e.md": ("---\nsensitivity: full-ip\n---\n" + wlp[4], "full-ip"),
        "unlabelled/heronsgate-gel.md": (UNLABELLED, "full-ip"),  # no default label: full-ip
        "unlabelled/wlp-f.txt": (wlp[5], "full-ip"),
    }
    labels = {}
    for name, (text, label) in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if label is not None:
            labels[name] = label
    return labels


def protocol_texts(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in root.rglob("*") if p.is_file()}


# -- workers -------------------------------------------------------------------------------------


def worker_env(broker_url: str, ledger_url: str, home: Path) -> dict[str, str]:
    return {**os.environ, "MSHALE_BROKER_URL": broker_url, "MSHALE_LEDGER_URL": ledger_url, "MSHALE_HOME": str(home)}


@contextmanager
def worker_process(role: str, broker_url: str, ledger_url: str, home: Path) -> Iterator[subprocess.Popen[str]]:
    """`mshale-fl worker ROLE` as a real process; SIGTERM at the end, and it must stop cleanly."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mshale_fl.cli", "worker", role],
        env=worker_env(broker_url, ledger_url, home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, f"worker {role} exited with {process.returncode}:\n{output[-4000:]}"


@asynccontextmanager
async def worker_in_process(role: str, processor: Processor, settings: Settings) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_worker(role, processor, settings, stop=stop, install_signal_handlers=False, shutdown_grace=5, retry_delay=0.05)
    )
    try:
        await asyncio.sleep(0)
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        close = getattr(processor, "close", None)
        if close is not None:
            close()


def cli_env(broker_url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "MSHALE_API_KEY"}
    env.update({"MSHALE_BROKER_URL": broker_url, "MSHALE_HOME": str(home), "COLUMNS": "250", **extra})
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mshale_fl.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def message_bytes(message: Any) -> bytes:
    """Everything a message carries that a sender chooses: body, type, user, app, content type, headers."""
    parts = [message.body, *(str(value).encode() for value in (message.type, message.user_id, message.app_id,
                                                               message.content_type) if value)]  # fmt: skip
    for key, value in (message.headers or {}).items():
        parts.append(f"{key}={value}".encode())
    return b"\n".join(parts)

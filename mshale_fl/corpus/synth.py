"""Synthesize partner corpora: protocols, outcome sidecars, partner configs and a manifest.

`synthesize(partners, protocols_per_partner, seed)` builds everything in memory; the same
arguments always give the same bytes. `write_synth_corpus(corpus, out)` writes it:

    DIR/manifest.json            partners, their profiles (domain mix, habits, style, labels), counts,
                                 every file's domain, format and label, and the seed
    DIR/_ground_truth.json       the outcome function's parameters, only with reveal_ground_truth
    DIR/<partner-id>/mshale.toml the lab's label rules, default label and agreements
    DIR/<partner-id>/**/<domain>-<n>.{md,txt,json}   protocols
    DIR/<partner-id>/**/<file>.outcome.json          {"outcome": x} beside each efficiency protocol

Outcomes are written only for `efficiency` protocols: the label means "procedures and outcomes";
`internal` is procedures without outcomes, and the others are not trained on.

Writing is atomic twice over: every file goes through `write_atomic`, and the partner folders are
built in a hidden staging folder inside DIR and moved into place only when all are complete, with
the manifest written last; an interrupted run leaves DIR as it was.

Randomness: every random choice comes from a `random.Random` seeded with a string naming what it
is for (`"<seed>/<partner>/<n>"`), so a protocol does not change when another one does, and
protocol n's domain and text do not depend on `--protocols-per-partner` (its label, drawn from the
lab's quota for that count, may).
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from mshale_fl.agents.partner.extract.reader import CONFIG_FILE_NAME, OUTCOME_SIDECAR_SUFFIX
from mshale_fl.agents.partner.featurize import feature_values
from mshale_fl.corpus.domains import DOMAINS
from mshale_fl.corpus.ground_truth import GroundTruth, draw_ground_truth
from mshale_fl.corpus.labels import Placement, label_quota, place
from mshale_fl.corpus.partners import PartnerProfile, draw_profile, draw_profiles, partner_config_toml
from mshale_fl.corpus.protocol import Draft, Writer
from mshale_fl.corpus.render import SUFFIX, render
from mshale_fl.errors import UserFacingError
from mshale_fl.fileio import write_atomic
from mshale_fl.schemas.vocabulary import Sensitivity

MANIFEST_NAME = "manifest.json"
GROUND_TRUTH_NAME = "_ground_truth.json"
MANIFEST_VERSION = 1
GENERATOR = "mshale-fl corpus synth"
MIN_PROTOCOLS = len(Sensitivity)  # every label in every partner
MAX_PARTNERS = 999
MAX_PROTOCOLS = 100_000
PARTNER_PREFIX = "lab"
WRITER_THREADS = 8


class CorpusError(UserFacingError):
    """The corpus cannot be synthesized or written as asked; the message names the fix."""


@dataclass(frozen=True)
class SynthesizedProtocol:
    path: str  # relative to the partner folder, POSIX separators
    domain: str
    file_format: str
    placement: Placement
    draft: Draft
    content: bytes
    features: np.ndarray  # the intended spec's 223 features (what the ground truth reads)
    outcome: float | None  # efficiency protocols only

    @property
    def label(self) -> Sensitivity:
        return self.placement.label

    def record(self) -> dict[str, object]:
        return {"path": self.path, "domain": self.domain, "format": self.file_format, "label": self.label.value,
                "label_source": self.placement.source, "outcome": self.outcome is not None}  # fmt: skip


@dataclass(frozen=True)
class PartnerCorpus:
    profile: PartnerProfile
    protocols: tuple[SynthesizedProtocol, ...]

    @property
    def partner_id(self) -> str:
        return self.profile.partner_id

    @property
    def config_toml(self) -> str:
        return partner_config_toml(self.profile)

    def files(self) -> list[tuple[str, bytes]]:
        """(relative path, bytes) of every file of the partner's folder, config first."""
        found = [(CONFIG_FILE_NAME, self.config_toml.encode("utf-8"))]
        for protocol in self.protocols:
            found.append((protocol.path, protocol.content))
            if protocol.outcome is not None:
                sidecar = json.dumps({"outcome": protocol.outcome}) + "\n"
                found.append((protocol.path + OUTCOME_SIDECAR_SUFFIX, sidecar.encode("utf-8")))
        return found

    def summary(self) -> dict[str, object]:
        def counts(values: Sequence[str]) -> dict[str, int]:
            return dict(sorted(Counter(values).items()))

        return {
            "partner_id": self.partner_id,
            "folder": self.partner_id,
            "protocols": len(self.protocols),
            "outcomes": sum(p.outcome is not None for p in self.protocols),
            "domains": counts([p.domain for p in self.protocols]),
            "labels": counts([p.label.value for p in self.protocols]),
            "label_sources": counts([p.placement.source for p in self.protocols]),
            "formats": counts([p.file_format for p in self.protocols]),
            "profile": self.profile.as_dict(),
        }


@dataclass(frozen=True)
class SynthCorpus:
    seed: int
    protocols_per_partner: int
    ground_truth: GroundTruth
    partners: tuple[PartnerCorpus, ...]

    def manifest(self, *, ground_truth_revealed: bool) -> dict[str, object]:
        return {
            "generator": GENERATOR,
            "manifest_version": MANIFEST_VERSION,
            "seed": self.seed,
            "protocols_per_partner": self.protocols_per_partner,
            "domains": {key: {"name": t.name, "spec_domain": t.spec_domain.value} for key, t in DOMAINS.items()},
            "ground_truth": GROUND_TRUTH_NAME if ground_truth_revealed else "hidden",
            "partners": [
                {**partner.summary(), "files": [p.record() for p in partner.protocols]} for partner in self.partners
            ],
        }


# ---------------------------------------------------------------- synthesis


def partner_ids(count: int) -> list[str]:
    width = max(2, len(str(count)))
    return [f"{PARTNER_PREFIX}-{index:0{width}d}" for index in range(1, count + 1)]


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def synthesize_protocol(profile: PartnerProfile, index: int, label: Sensitivity, ground_truth: GroundTruth, seed: int,
                        *, width: int = 3) -> SynthesizedProtocol:  # fmt: skip
    """Protocol number `index` of a lab: its domain, text, file, label placement and (if efficiency) outcome."""
    rng = random.Random(f"{seed}/{profile.partner_id}/{index}")
    domain = _weighted(rng, profile.domain_mix)
    draft = DOMAINS[domain].write(Writer(rng, profile.style, profile.habits))
    file_format = _weighted(rng, profile.formats)
    placement = place(label, file_format, profile, rng)
    content = render(draft, file_format, numbering=profile.numbering, label=label.value if placement.marked else None,
                     rng=rng)  # fmt: skip
    name = f"{domain.replace('_', '-')}-{index:0{width}d}{SUFFIX[file_format]}"
    path = f"{placement.folder}/{name}" if placement.folder else name
    features = feature_values(draft.intended_spec())
    outcome = ground_truth.outcome(features, rng) if label is Sensitivity.EFFICIENCY else None
    return SynthesizedProtocol(path, domain, file_format, placement, draft, content, features, outcome)


def synthesize_partner(profile: PartnerProfile, count: int, ground_truth: GroundTruth, seed: int, *,
                       labels: Sequence[Sensitivity] | None = None,
                       on_protocol: Callable[[SynthesizedProtocol], None] | None = None) -> PartnerCorpus:  # fmt: skip
    """`count` protocols of one lab; `labels` (one per protocol) defaults to the lab's label mix with every label present."""
    if labels is None:
        labels = label_quota(count, profile.label_mix, random.Random(f"{seed}/{profile.partner_id}/labels"))
    if len(labels) != count:
        raise ValueError(f"{len(labels)} labels for {count} protocols")
    width = max(3, len(str(count)))
    protocols = []
    for index, label in enumerate(labels, start=1):
        protocol = synthesize_protocol(profile, index, label, ground_truth, seed, width=width)
        protocols.append(protocol)
        if on_protocol:
            on_protocol(protocol)
    return PartnerCorpus(profile, tuple(protocols))


def check_sizes(partners: int, protocols_per_partner: int) -> None:
    if not 1 <= partners <= MAX_PARTNERS:
        raise CorpusError(f"--partners must be between 1 and {MAX_PARTNERS}, not {partners}")
    if not MIN_PROTOCOLS <= protocols_per_partner <= MAX_PROTOCOLS:
        raise CorpusError(
            f"--protocols-per-partner must be between {MIN_PROTOCOLS} (one of each sensitivity label) and "
            f"{MAX_PROTOCOLS}, not {protocols_per_partner}"
        )


def synthesize(partners: int, protocols_per_partner: int, seed: int, *,
               on_protocol: Callable[[SynthesizedProtocol], None] | None = None) -> SynthCorpus:  # fmt: skip
    """The whole corpus in memory (see the module docstring); deterministic for the seed."""
    check_sizes(partners, protocols_per_partner)
    ground_truth = cached_ground_truth(seed)
    corpora = [synthesize_partner(profile, protocols_per_partner, ground_truth, seed, on_protocol=on_protocol)
               for profile in draw_profiles(partner_ids(partners), seed)]  # fmt: skip
    return SynthCorpus(seed, protocols_per_partner, ground_truth, tuple(corpora))


@lru_cache(maxsize=16)
def cached_ground_truth(seed: int) -> GroundTruth:
    """`draw_ground_truth(seed)`, computed once per process (it writes a reference sample to scale itself)."""
    return draw_ground_truth(seed)


def training_partner(partner_id: str, count: int, seed: int, ground_truth: GroundTruth) -> PartnerCorpus:
    """A lab whose protocols are all `efficiency` with outcomes: a Tier 3 training corpus and nothing else."""
    profile = draw_profile(partner_id, random.Random(f"{seed}/{partner_id}/profile"))
    profile = replace(profile, label_mix={Sensitivity.EFFICIENCY: 1.0})
    return synthesize_partner(profile, count, ground_truth, seed, labels=[Sensitivity.EFFICIENCY] * count)


# ---------------------------------------------------------------- writing


def write_partner_files(partner: PartnerCorpus, folder: Path, on_file: Callable[[str], None] | None = None) -> None:
    """Write one lab's files into `folder` (created if needed), each atomically; other files there are left alone.

    Files are written by WRITER_THREADS threads: each write waits on two fsyncs (file, folder),
    which release the GIL, so threads cut the time several-fold on a real disk.
    """
    files = partner.files()
    for parent in sorted({(folder / relative).parent for relative, _ in files}):
        parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=WRITER_THREADS) as pool:
        for relative in pool.map(lambda item: _write(folder, *item), files):
            if on_file:
                on_file(relative)


def _write(folder: Path, relative: str, content: bytes) -> str:
    write_atomic(folder / relative, content)
    return relative


def _json_bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _previous_partner_folders(out: Path) -> list[str]:
    try:
        manifest = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        return []
    return [p["folder"] for p in manifest.get("partners", []) if isinstance(p, dict) and isinstance(p.get("folder"), str)]


def _prepare_output(out: Path, partners: Sequence[str], force: bool) -> list[Path]:
    """Check DIR may be written; with force, what to replace: previous synthesized output and the folders to write."""
    if out.exists() and not out.is_dir():
        raise CorpusError(f"{out} exists and is not a folder; choose another --out")
    if not out.exists():
        return []
    entries = sorted(p.name for p in out.iterdir())
    if entries and not force:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise CorpusError(f"{out} is not empty ({shown}); choose an empty or new --out, or pass --force to replace "
                          "a synthesized corpus there")  # fmt: skip
    replaced = {name for name in (*_previous_partner_folders(out), *partners) if "/" not in name and name not in (".", "..")}
    leftovers = sorted(out.glob(".synth-staging-*"))  # from a run that was killed before it could clean up
    return [out / name for name in sorted(replaced) if (out / name).exists()] + leftovers + [
        out / name for name in (MANIFEST_NAME, GROUND_TRUTH_NAME) if (out / name).exists()
    ]


def write_synth_corpus(corpus: SynthCorpus, out: Path, *, force: bool = False, reveal_ground_truth: bool = False,
                       on_protocol: Callable[[str], None] | None = None) -> Path:  # fmt: skip
    """Write the corpus under `out` (see the module docstring); returns the manifest's path.

    `out` must be empty or new; with `force`, a previous synthesized corpus there (the manifest,
    the ground truth file and the partner folders it lists, and folders named like the partners
    about to be written) is replaced and anything else is left alone.
    """
    out = Path(out)
    stale = _prepare_output(out, [p.partner_id for p in corpus.partners], force)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".synth-staging-", dir=out))
    except OSError as error:
        raise CorpusError(f"cannot create {out}: {error.strerror or error}") from None
    try:
        for partner in corpus.partners:
            def done(relative: str) -> None:
                if on_protocol and not relative.endswith(OUTCOME_SIDECAR_SUFFIX) and relative != CONFIG_FILE_NAME:
                    on_protocol(relative)

            write_partner_files(partner, staging / partner.partner_id, done)
        for path in stale:  # the previous corpus goes only once the new one is complete
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for partner in corpus.partners:
            (staging / partner.partner_id).replace(out / partner.partner_id)
        if reveal_ground_truth:
            write_atomic(out / GROUND_TRUTH_NAME, _json_bytes(corpus.ground_truth.as_dict()))
        write_atomic(out / MANIFEST_NAME, _json_bytes(corpus.manifest(ground_truth_revealed=reveal_ground_truth)))
    except OSError as error:
        raise CorpusError(f"cannot write the corpus to {out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not (out / MANIFEST_NAME).exists() and not any(out.iterdir()):
            out.rmdir()  # a failed first run leaves no empty folder behind either
    return out / MANIFEST_NAME

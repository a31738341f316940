"""Linkage attack on Tier 2 feature vectors over the WLP corpus (train + dev); appends a section to BENCHMARKS.md.

    .venv/bin/python benchmarks/linkage_attack.py [--wlp ../shared/corpora/wlp] [--no-write] [--json FILE]

Every protocol is extracted to a spec and featurized. Then:

1. Closed world (the attacker holds every candidate protocol's text and our featurizer, sees one
   vector and picks the candidate whose vector is nearest, ties broken at random). Because the
   featurizer is public and deterministic, a vector whose value no other candidate shares is
   re-identified with certainty: the top-1 rate is the mean of 1/k over protocols, k being the
   size of the protocol's equivalence class (protocols with an identical vector). This is the
   k-anonymity view; it is reported beside the same figure for Tier 1 specs (exact quantities)
   and for the raw text.
2. Near-duplicates: protocol pairs whose texts have a Jaccard similarity of word 3-shingles
   >= 0.8 are listed separately (they are the same protocol for an attacker's purposes), with how
   often their vectors coincide and the closed-world rate with and without them.
3. Open world (what the vector reveals beyond the texts the attacker already holds): the target's
   own text is removed from the candidates; the attacker takes the nearest other protocol as a
   guess of the target's text. Reported: word-set Jaccard between the guess and the target,
   against a random guess and against the best possible guess (the most similar other text).
4. Which groups make vectors unique: the number of unique vectors when one group is left out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import secrets
import statistics
import time
from collections import Counter
from pathlib import Path

import numpy as np
from mshale_fl.agents.partner.extract import Protocol, extract_spec, read_one
from mshale_fl.agents.partner.featurize import GROUPS, feature_values

from mshale_fl.testing.machine import describe

ROOT = Path(__file__).resolve().parents[1]
NEAR_DUPLICATE = 0.8
SHINGLE = 3
WORD = re.compile(r"\w+")


def machine() -> str:
    return describe()


def load(wlp: Path) -> tuple[list[str], list[Protocol], np.ndarray, list[str]]:
    """Names, protocols, vectors (N x 223) and canonical spec JSON (without the salted hash)."""
    salt = secrets.token_bytes(32)
    names, protocols, vectors, specs = [], [], [], []
    for split in ("train", "dev"):
        for path in sorted((wlp / split).glob("*.txt")):
            protocol = read_one(path, wlp / split)
            if not isinstance(protocol, Protocol):
                raise SystemExit(f"{split}/{path.name}: {protocol.reason}")
            spec = extract_spec(protocol, salt).spec
            names.append(f"{split}/{path.name}")
            protocols.append(protocol)
            vectors.append(feature_values(spec))
            specs.append(spec.model_copy(update={"content_hash": "0" * 64}).model_dump_json())
    return names, protocols, np.stack(vectors), specs


def class_sizes(keys: list) -> list[int]:
    """For every item, how many items share its key (its equivalence class size)."""
    counts = Counter(keys)
    return [counts[key] for key in keys]


def size_distribution(sizes: list[int]) -> dict[str, int]:
    """Protocols by equivalence-class size: 1, 2, 3-5, 6+."""
    bands = {"1": 0, "2": 0, "3-5": 0, "6+": 0}
    for size in sizes:
        bands["1" if size == 1 else "2" if size == 2 else "3-5" if size <= 5 else "6+"] += 1
    return bands


def shingles(text: str, n: int = SHINGLE) -> frozenset:
    words = WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset | set, b: frozenset | set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def pairwise_jaccard(sets: list[frozenset]) -> np.ndarray:
    n = len(sets)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = jaccard(sets[i], sets[j])
    return matrix


def l1_distances(vectors: np.ndarray) -> np.ndarray:
    as64 = vectors.astype(np.float64)
    return np.abs(as64[:, None, :] - as64[None, :, :]).sum(axis=2)


def open_world(distances: np.ndarray, words: np.ndarray, shingle_sim: np.ndarray, targets: list[int]) -> dict:
    """Leave-one-out nearest neighbour over `targets`: similarity of the guessed text to the target's text."""
    n = len(distances)
    guessed, randomly, best, near_dup_found, near_dup_exists = [], [], [], 0.0, 0
    for target in targets:
        others = np.array([i for i in range(n) if i != target])
        row = distances[target, others]
        ties = others[row == row.min()]
        guessed.append(float(np.mean(words[target, ties])))  # expected value over a random tie-break
        randomly.append(float(np.mean(words[target, others])))
        best.append(float(words[target, others].max()))
        if shingle_sim[target, others].max() >= NEAR_DUPLICATE:
            near_dup_exists += 1
            near_dup_found += float(np.mean(shingle_sim[target, ties] >= NEAR_DUPLICATE))
    return {
        "targets": len(targets),
        "guess_word_jaccard_mean": statistics.fmean(guessed),
        "guess_word_jaccard_median": statistics.median(guessed),
        "random_word_jaccard_mean": statistics.fmean(randomly),
        "best_word_jaccard_mean": statistics.fmean(best),
        "best_word_jaccard_median": statistics.median(best),
        "targets_with_a_near_duplicate": near_dup_exists,
        "near_duplicate_retrieved_expected": near_dup_found,
    }


def run(wlp: Path) -> dict:
    started = time.perf_counter()
    names, protocols, vectors, specs = load(wlp)
    extract_seconds = time.perf_counter() - started
    n = len(names)
    texts = [p.text for p in protocols]

    vector_sizes = class_sizes([v.tobytes() for v in vectors])
    spec_sizes = class_sizes(specs)
    text_sizes = class_sizes(texts)

    shingle_sets = [shingles(t) for t in texts]
    shingle_sim = pairwise_jaccard(shingle_sets)
    word_sets = [frozenset(WORD.findall(t.lower())) for t in texts]
    word_sim = pairwise_jaccard(word_sets)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n) if shingle_sim[i, j] >= NEAR_DUPLICATE]
    in_near_dup = {i for pair in pairs for i in pair}
    identical_pairs = sum(np.array_equal(vectors[i], vectors[j]) for i, j in pairs)
    # vectors identical to another protocol's: is the other one a near-duplicate?
    keys = [v.tobytes() for v in vectors]
    shared = [i for i in range(n) if vector_sizes[i] > 1]
    shared_with_near_dup = sum(
        any(keys[j] == keys[i] and shingle_sim[i, j] >= NEAR_DUPLICATE for j in range(n) if j != i) for i in shared
    )

    def rate(sizes: list[int], members: list[int]) -> float:
        return statistics.fmean(1 / sizes[i] for i in members) if members else float("nan")

    everyone = list(range(n))
    distinct = [i for i in everyone if i not in in_near_dup]
    distances = l1_distances(vectors)
    without_group, only_group = {}, {}
    for group in GROUPS:
        kept = np.delete(vectors, np.s_[group.start : group.stop], axis=1)
        without_group[group.key] = class_sizes([v.tobytes() for v in kept]).count(1)
        only_group[group.key] = class_sizes([v[group.start : group.stop].tobytes() for v in vectors]).count(1)
    return {
        "protocols": n,
        "extract_and_featurize_seconds": extract_seconds,
        "closed_world": {
            "vector_top1": rate(vector_sizes, everyone),
            "spec_top1": rate(spec_sizes, everyone),
            "text_top1": rate(text_sizes, everyone),
            "vector_top1_without_near_duplicates": rate(vector_sizes, distinct),
            "vector_top1_with_near_duplicates": rate(vector_sizes, sorted(in_near_dup)),
            "vector_classes": size_distribution(vector_sizes),
            "spec_classes": size_distribution(spec_sizes),
            "distinct_vectors": len(set(keys)),
            "largest_vector_class": max(vector_sizes),
        },
        "near_duplicates": {
            "pairs": len(pairs),
            "protocols": len(in_near_dup),
            "pairs_with_identical_vectors": int(identical_pairs),
            "protocols_sharing_a_vector": len(shared),
            "of_which_share_it_with_a_near_duplicate": int(shared_with_near_dup),
        },
        "open_world": {
            "all": open_world(distances, word_sim, shingle_sim, everyone),
            "without_near_duplicates": open_world(distances, word_sim, shingle_sim, distinct),
        },
        "unique_vectors_without_group": without_group,
        "unique_vectors_only_group": only_group,
        "unique_vectors_all_groups": vector_sizes.count(1),
    }


def section(result: dict) -> str:
    cw, nd = result["closed_world"], result["near_duplicates"]
    ow_all, ow_distinct = result["open_world"]["all"], result["open_world"]["without_near_duplicates"]
    n = result["protocols"]
    vc, sc = cw["vector_classes"], cw["spec_classes"]
    without = sorted(result["unique_vectors_without_group"].items(), key=lambda item: item[1])
    only = sorted(result["unique_vectors_only_group"].items(), key=lambda item: -item[1])
    lines = [
        f"## Tier 2 linkage attack (WLP train + dev) — {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}. Script: `benchmarks/linkage_attack.py`. {n} protocols extracted and featurized "
        f"in {result['extract_and_featurize_seconds']:.1f} s. Nearest neighbour by L1 distance, ties broken at "
        "random (figures are expected values).",
        "",
        "**Closed world** (the attacker holds every candidate's text and runs our featurizer; the vector is a "
        "deterministic function of the text, so this measures how often the vector singles out one candidate):",
        "",
        "| what the attacker sees | top-1 re-identification | protocols in classes of size 1 / 2 / 3-5 / 6+ |",
        "|---|---:|---|",
        f"| raw text (the corpus has exact duplicates) | {cw['text_top1']:.3f} | - |",
        f"| Tier 1 spec (exact quantities, hash removed) | {cw['spec_top1']:.3f} | "
        f"{sc['1']} / {sc['2']} / {sc['3-5']} / {sc['6+']} |",
        f"| **Tier 2 vector** | **{cw['vector_top1']:.3f}** | {vc['1']} / {vc['2']} / {vc['3-5']} / {vc['6+']} |",
        f"| Tier 2 vector, protocols without a near-duplicate ({n - nd['protocols']}) | "
        f"{cw['vector_top1_without_near_duplicates']:.3f} | |",
        f"| Tier 2 vector, protocols with a near-duplicate ({nd['protocols']}) | "
        f"{cw['vector_top1_with_near_duplicates']:.3f} | |",
        "",
        f"{cw['distinct_vectors']} distinct vectors for {n} protocols; the largest class of identical vectors "
        f"has {cw['largest_vector_class']} protocols.",
        "",
        f"**Near-duplicates** (Jaccard of word {SHINGLE}-shingles >= {NEAR_DUPLICATE}): {nd['pairs']} pairs over "
        f"{nd['protocols']} protocols; {nd['pairs_with_identical_vectors']} of the pairs have identical vectors. "
        f"Of the {nd['protocols_sharing_a_vector']} protocols whose vector equals another protocol's, "
        f"{nd['of_which_share_it_with_a_near_duplicate']} share it with a near-duplicate text.",
        "",
        "**Open world** (what the vector reveals beyond the texts the attacker holds: the target's own text is "
        "not among the candidates, and the attacker's guess of it is the protocol with the nearest vector). "
        "Word-set Jaccard between guess and target, mean (median):",
        "",
        "| targets | random other protocol | **nearest vector** | most similar other text (oracle) |",
        "|---|---:|---:|---:|",
    ]
    for label, ow in ((f"all ({ow_all['targets']})", ow_all),
                      (f"without a near-duplicate ({ow_distinct['targets']})", ow_distinct)):  # fmt: skip
        lines.append(
            f"| {label} | {ow['random_word_jaccard_mean']:.3f} | **{ow['guess_word_jaccard_mean']:.3f}** "
            f"({ow['guess_word_jaccard_median']:.3f}) | {ow['best_word_jaccard_mean']:.3f} "
            f"({ow['best_word_jaccard_median']:.3f}) |"
        )
    lines += [
        "",
        f"{ow_all['targets_with_a_near_duplicate']} targets have a near-duplicate among the others; the nearest "
        f"vector retrieves one for {ow_all['near_duplicate_retrieved_expected']:.1f} of them (expected).",
        "",
        f"**Uniqueness by group**: {result['unique_vectors_all_groups']} unique vectors with all groups. "
        "Leaving one group out (fewest unique first): "
        + ", ".join(f"`{key}` {count}" for key, count in without[:5])
        + ". One group alone (most unique first): "
        + ", ".join(f"`{key}` {count}" for key, count in only[:6])
        + ".",
    ]
    return "\n".join(lines) + "\n"


def append(path: Path, text: str) -> None:
    """Append with one O_APPEND write, so sections written by concurrent runs never overwrite each other."""
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, ("\n" + text).encode("utf-8"))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wlp", type=Path, default=ROOT.parent / "shared" / "corpora" / "wlp")
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--no-write", action="store_true", help="print the section only")
    parser.add_argument("--json", type=Path, help="also write the raw figures to this file")
    args = parser.parse_args()
    if not (args.wlp / "train").is_dir() or not (args.wlp / "dev").is_dir():
        raise SystemExit(f"error: {args.wlp} needs train/ and dev/ folders (the WLP corpus)")
    result = run(args.wlp)
    text = section(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not args.no_write:
        append(args.output, text)
        print(f"appended to {args.output}")


if __name__ == "__main__":
    main()

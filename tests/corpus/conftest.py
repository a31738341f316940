from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mshale_fl.corpus import SynthCorpus, synthesize, write_synth_corpus


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The model is tiny: a second intra-op thread only adds contention on a shared machine.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_corpus() -> SynthCorpus:
    """Three labs of 12 protocols: enough for every label in every lab."""
    return synthesize(3, 12, seed=4)


@pytest.fixture(scope="session")
def written_small(small_corpus: SynthCorpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "corpus"
    write_synth_corpus(small_corpus, out, reveal_ground_truth=True)
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}

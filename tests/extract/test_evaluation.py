"""`mshale-fl eval extract`: the JSON shape, the scoring rules, and quality above the published baseline on dev."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from mshale_fl.agents.partner.extract.evaluation import read_brat_spans, score
from typer.testing import CliRunner

from mshale_fl.cli.extract_cmd import WNUT_2020_BASELINE_F1, eval_app

from .conftest import write

TYPES = {"Action", "Temperature", "Time", "Amount", "Concentration", "Speed", "pH"}


def _eval(*args: str) -> CliRunner:
    app = typer.Typer()
    app.add_typer(eval_app, name="eval")
    return CliRunner().invoke(app, ["eval", "extract", *args])


@pytest.fixture(scope="module")
def dev_scores(wlp_dir: Path) -> dict:
    result = _eval("--wlp", str(wlp_dir / "dev"), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_json_has_exactly_the_documented_shape(dev_scores: dict) -> None:
    assert set(dev_scores) == {"types", "protocols_per_s"}
    assert set(dev_scores["types"]) == TYPES
    for scores in dev_scores["types"].values():
        assert set(scores) == {"exact", "overlap"}
        for kind in scores.values():
            assert set(kind) == {"precision", "recall", "f1"}
            assert all(0.0 <= value <= 1.0 for value in kind.values())
        assert scores["overlap"]["f1"] >= scores["exact"]["f1"]
    assert dev_scores["protocols_per_s"] > 0


@pytest.mark.parametrize("label", sorted(WNUT_2020_BASELINE_F1))
def test_dev_exact_f1_beats_the_wnut_2020_baseline(dev_scores: dict, label: str) -> None:
    assert dev_scores["types"][label]["exact"]["f1"] > WNUT_2020_BASELINE_F1[label]


def test_exact_and_overlap_matching() -> None:
    gold = [("Time", 0, 5), ("Time", 10, 15), ("Action", 20, 23)]
    predicted = [("Time", 0, 5), ("Time", 9, 20), ("Temperature", 20, 23), ("Time", 30, 31)]
    report = score([(gold, predicted)], types=["Time", "Action"])
    assert report.exact["Time"].precision == pytest.approx(1 / 3) and report.exact["Time"].recall == 0.5
    assert report.overlap["Time"].precision == pytest.approx(2 / 3) and report.overlap["Time"].recall == 1.0
    assert report.exact["Action"].recall == 0.0  # the right offsets with the wrong type do not count
    one_long = score([([("Time", 0, 5), ("Time", 6, 9)], [("Time", 0, 9)])], types=["Time"])
    assert one_long.overlap["Time"].recall == 0.5  # one prediction is credited for one gold span only


def test_brat_reader_takes_text_bound_spans_only(tmp_path: Path) -> None:
    ann = write(tmp_path / "p.ann", "T1\tAction 0 3\tAdd\nE1\tAction:T1 \nT2\tAmount 4 9;10 12\t5 ml x\nR1\tSetting Arg1:E1 Arg2:T2\t\n")
    assert read_brat_spans(ann) == [("Action", 0, 3), ("Amount", 4, 12)]


def test_a_folder_without_pairs_is_a_clear_error(tmp_path: Path) -> None:
    result = _eval("--wlp", str(tmp_path))
    assert result.exit_code == 2
    assert "no .txt/.ann pairs" in result.output and "Traceback" not in result.output

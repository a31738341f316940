"""The layout is data with rules: 223 named features, contiguous groups, vocabularies counted once, doc in sync."""

from __future__ import annotations

import subprocess
import sys
from enum import Enum

import pytest
from mshale_fl.agents.partner.featurize import (
    FEATURE_DIM,
    FEATURES,
    GROUP_BY_KEY,
    GROUPS,
    Encoding,
    feature,
    feature_names,
    group_ranges,
)
from mshale_fl.agents.partner.featurize import docs, layout
from mshale_fl.schemas.feature_vector import FEATURE_SCHEMA_VERSION, FeatureVector
from mshale_fl.schemas.vocabulary import (
    Domain,
    EquipmentClass,
    LabwareClass,
    Operation,
    Organism,
    QuantityKind,
    ReagentClass,
)


def test_exactly_the_contract_dimension_with_unique_names() -> None:
    names = feature_names()
    assert FEATURE_DIM == 223
    assert len(names) == len(FEATURES) == FEATURE_DIM
    assert len(set(names)) == FEATURE_DIM
    assert all(name.count(".") == 1 and name == name.lower() and " " not in name for name in names)
    assert FeatureVector.model_fields["feature_schema_version"].default == FEATURE_SCHEMA_VERSION == 1


def test_groups_tile_the_indices_in_order() -> None:
    ranges = list(group_ranges().values())
    assert ranges[0].start == 0 and ranges[-1].stop == FEATURE_DIM
    assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:], strict=False))
    for group in GROUPS:
        assert [f.name for f in FEATURES[group.start : group.stop]] == [f"{group.key}.{m.name}" for m in group.members]
        assert group.meaning and group.unit and group.scaling


def test_lookup_by_name_and_index_with_clear_errors() -> None:
    assert feature("operations.centrifuge").index == GROUP_BY_KEY["operations"].start + list(Operation).index(
        Operation.CENTRIFUGE
    )
    assert feature(0).name == "step_count.1_3"
    with pytest.raises(KeyError, match="no feature named 'operations.teleport'"):
        feature("operations.teleport")
    with pytest.raises(IndexError, match="outside 0-222"):
        feature(223)


@pytest.mark.parametrize(
    ("group_keys", "vocabulary"),
    [
        (("operations", "workflow_first_third", "workflow_middle_third", "workflow_last_third"), Operation),
        (("equipment",), EquipmentClass),
        (("labware",), LabwareClass),
        (("reagents",), ReagentClass),
        (("domain",), Domain),
        (("organism",), Organism),
    ],
)
def test_every_vocabulary_member_is_counted_by_exactly_one_feature(
    group_keys: tuple[str, ...], vocabulary: type[Enum]
) -> None:
    for key in group_keys:
        counted = [selected for member in GROUP_BY_KEY[key].members for selected in member.selects]
        assert sorted(counted, key=str) == sorted(vocabulary, key=str), key


def test_every_quantity_kind_has_a_histogram_or_a_count() -> None:
    histograms = [g.kind for g in GROUPS if g.kind is not None]
    counted = [k for m in GROUP_BY_KEY["other_quantities"].members for k in m.selects]
    assert sorted(histograms + counted) == sorted(QuantityKind)
    for group in GROUPS:
        if group.kind is not None:
            edges = group.edges
            assert list(edges) == sorted(edges) and len(edges) == len(group.members) - 1
            assert group.members[0].low is None and group.members[-1].high is None
            for before, after in zip(group.members, group.members[1:], strict=False):
                assert before.high == after.low  # contiguous half-open bins


def test_documented_ranges_and_grids() -> None:
    for item in FEATURES:
        assert (item.low, item.high) == (0.0, 1.0)
        expected = {Encoding.COUNT_LEVEL: 4, Encoding.FRACTION: 8, Encoding.ONE_HOT: 1, Encoding.PRESENCE: 1}
        assert item.grid == expected[item.group.encoding]


def test_the_layout_check_refuses_a_layout_that_breaks_a_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check run at import really fails when the size is wrong or a vocabulary member is left out."""
    broken = tuple(g for g in layout._DECLARED if g.key != "labware")
    groups, features = layout._assemble(broken)
    monkeypatch.setattr(layout, "GROUPS", groups)
    monkeypatch.setattr(layout, "FEATURES", features)
    monkeypatch.setattr(layout, "GROUP_BY_KEY", {g.key: g for g in groups})
    with pytest.raises(layout.LayoutError, match="the layout declares 211 features, the contract needs 223"):
        layout._check()
    equipment = GROUP_BY_KEY["equipment"]
    with pytest.raises(layout.LayoutError, match=r"missing \['microscope'\]"):
        layout._check_partition(EquipmentClass, [m for m in equipment.members if m.name != "microscope"], "equipment")


def test_docs_features_md_matches_the_code() -> None:
    current = docs.DEFAULT_PATH.read_text(encoding="utf-8")
    stale = "docs/features.md is stale: run python -m mshale_fl.agents.partner.featurize.docs"
    assert current == docs.render(current), stale
    for item in FEATURES:
        assert f"| {item.index} | `{item.name}` |" in current
    for group in GROUPS:
        assert f"| `{group.key}` | {group.start}-{group.stop - 1} |" in current


def test_docs_check_command_reports_a_stale_file(tmp_path) -> None:
    stale = tmp_path / "features.md"
    stale.write_text(f"# Features\n\n{docs.BEGIN}\nold table\n{docs.END}\nprose after\n", encoding="utf-8")
    command = [sys.executable, "-m", "mshale_fl.agents.partner.featurize.docs"]
    checked = subprocess.run([*command, "--check", str(stale)], capture_output=True, text=True, check=False)
    assert checked.returncode == 1 and "out of date" in checked.stderr
    assert subprocess.run([*command, str(stale)], check=False).returncode == 0
    rewritten = stale.read_text(encoding="utf-8")
    assert "old table" not in rewritten and rewritten.endswith("prose after\n")
    assert "| 222 | `sample_type.none` |" in rewritten
    assert subprocess.run([*command, "--check", str(stale)], check=False).returncode == 0

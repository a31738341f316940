"""Exported JSON Schemas and the AsyncAPI document agree with the models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from mshale_fl.cli import app
from mshale_fl.schemas import EVENT_TYPES
from mshale_fl.schemas.export import asyncapi_document, json_schemas
from mshale_fl.testing.samples import sample_event, sample_spec, sample_vector


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("schemas")
    result = CliRunner().invoke(app, ["schema", "export", str(directory)])
    assert result.exit_code == 0, result.output
    return directory


def _load(directory: Path, name: str) -> dict:
    return json.loads((directory / name).read_text())


@pytest.mark.parametrize("type_name", EVENT_TYPES)
def test_sample_event_validates_against_its_exported_schema(exported: Path, type_name: str) -> None:
    schema = _load(exported, f"{type_name}.schema.json")
    jsonschema.Draft202012Validator.check_schema(schema)
    instance = sample_event(type_name).model_dump(mode="json")
    jsonschema.validate(instance, schema, cls=jsonschema.Draft202012Validator)
    jsonschema.validate(instance, _load(exported, "event.schema.json"), cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("type_name", EVENT_TYPES)
def test_exported_schema_rejects_unknown_fields(exported: Path, type_name: str) -> None:
    instance = sample_event(type_name).model_dump(mode="json")
    instance["payload"]["comment"] = "free text"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(instance, _load(exported, f"{type_name}.schema.json"))


def test_exported_schema_rejects_another_types_payload(exported: Path) -> None:
    instance = sample_event("budget.low").model_dump(mode="json")
    instance["type"] = "model.published"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(instance, _load(exported, "event.schema.json"))


def test_spec_and_vector_schemas(exported: Path) -> None:
    jsonschema.validate(sample_spec().model_dump(mode="json"), _load(exported, "protocol-spec.schema.json"))
    vector = sample_vector().model_dump(mode="json")
    jsonschema.validate(vector, _load(exported, "feature-vector.schema.json"))
    vector["values"] = vector["values"][:-1]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(vector, _load(exported, "feature-vector.schema.json"))


def _string_leaves(schema: dict, root: dict, path: str = "$") -> list[tuple[str, dict]]:
    """Every schema node that admits a string, following $refs."""
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        return _string_leaves(root["$defs"][name], root, path)
    found = []
    if schema.get("type") == "string":
        found.append((path, schema))
    for key in ("anyOf", "oneOf", "allOf"):
        for index, sub in enumerate(schema.get(key, [])):
            found += _string_leaves(sub, root, f"{path}.{key}[{index}]")
    for name, sub in schema.get("properties", {}).items():
        found += _string_leaves(sub, root, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += _string_leaves(schema["items"], root, f"{path}[]")
    return found


def test_protocol_spec_schema_has_no_free_text_field() -> None:
    """Every string a spec can hold is an enum member or a fixed-format pattern: no prose fits."""
    schema = json_schemas()["protocol-spec.schema.json"]
    leaves = _string_leaves(schema, schema)
    assert leaves, "expected enum and hash fields"
    for path, leaf in leaves:
        assert "enum" in leaf or "const" in leaf or leaf.get("pattern", "").startswith("^["), (path, leaf)


def test_asyncapi_document_names_every_event_and_resolves_every_ref(exported: Path) -> None:
    document = yaml.safe_load((exported / "asyncapi.yaml").read_text())
    assert document == json.loads(json.dumps(asyncapi_document()))
    assert document["asyncapi"] == "3.0.0"
    names = {message["name"] for message in document["components"]["messages"].values()}
    assert names == set(EVENT_TYPES)
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {"{partnerId}." + t for t in EVENT_TYPES}
    assert len(document["operations"]) == len(EVENT_TYPES)

    def resolve(ref: str) -> object:
        node: object = document
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]
        return node

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)

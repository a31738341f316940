"""JSON Schema and AsyncAPI 3.0 documents generated from the models (never hand-maintained).

Pure functions returning dicts; the CLI (`mshale-fl schema export DIR`) writes them to files.
A partner in any language validates an event against `<type>.schema.json` before sending.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from mshale_fl.schemas.events import EVENT_MODELS, SCHEMA_VERSION, Event
from mshale_fl.schemas.feature_vector import FeatureVector
from mshale_fl.schemas.protocol_spec import ProtocolSpec

EXCHANGE = "mshale.events"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

# Which side publishes each event type; everything else is published by Mishale.
PARTNER_PUBLISHED = frozenset({"spec.submitted", "vectors.submitted", "prediction.requested"})


def _camel(type_name: str) -> str:
    head, *rest = type_name.replace(".", "_").split("_")
    return head + "".join(part.capitalize() for part in rest)


def json_schemas() -> dict[str, dict[str, Any]]:
    """One self-contained JSON Schema per file name: each event type, the union, the spec, the vector."""
    documents: dict[str, dict[str, Any]] = {}
    for type_name, model in EVENT_MODELS.items():
        documents[f"{type_name}.schema.json"] = _standalone(model.model_json_schema(), f"event-{type_name}")
    documents["event.schema.json"] = _standalone(TypeAdapter(Event).json_schema(), "event")
    documents["protocol-spec.schema.json"] = _standalone(ProtocolSpec.model_json_schema(), "protocol-spec")
    documents["feature-vector.schema.json"] = _standalone(FeatureVector.model_json_schema(), "feature-vector")
    return documents


def _standalone(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": f"https://mshale.bio/schemas/v{SCHEMA_VERSION}/{name}.json", **schema}


def asyncapi_document() -> dict[str, Any]:
    """The channels (routing keys on the `mshale.events` topic exchange), messages and operations."""
    models: list[tuple[type[BaseModel], str]] = [(model, "validation") for model in EVENT_MODELS.values()]
    keys, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for type_name, model in EVENT_MODELS.items():
        channel_id = _camel(type_name)
        message_id = model.__name__
        schema_ref = keys[(model, "validation")]["$ref"]
        messages[message_id] = {
            "name": type_name,
            "title": message_id,
            "summary": (model.__doc__ or "").strip(),
            "contentType": "application/json",
            "payload": {"$ref": schema_ref},
            "correlationId": {"location": "$message.header#/correlation_id"},
            "bindings": {"amqp": {"messageType": type_name, "bindingVersion": "0.3.0"}},
        }
        channels[channel_id] = {
            "address": "{partnerId}." + type_name,
            "title": type_name,
            "parameters": {"partnerId": {"description": "The partner the event is from or about ('mishale' for system events)"}},
            "messages": {message_id: {"$ref": f"#/components/messages/{message_id}"}},
            "bindings": {
                "amqp": {
                    "is": "routingKey",
                    "exchange": {"name": EXCHANGE, "type": "topic", "durable": True, "autoDelete": False, "vhost": "/"},
                    "bindingVersion": "0.3.0",
                }
            },
        }
        partner_sends = type_name in PARTNER_PUBLISHED
        operations[("receive" if partner_sends else "send") + channel_id[0].upper() + channel_id[1:]] = {
            # Written from Mishale's side: it receives what partners publish and sends the rest.
            "action": "receive" if partner_sends else "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{message_id}"}],
            "bindings": {"amqp": {"deliveryMode": 2, "mandatory": True, "ack": True, "bindingVersion": "0.3.0"}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "mshale-fl events",
            "version": f"{SCHEMA_VERSION}.0.0",
            "description": (
                "Typed events exchanged by partner agents and Mishale workers over RabbitMQ. "
                "Routing key: <partner_id>.<event type> on the durable topic exchange mshale.events."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "localhost:5672", "protocol": "amqp", "protocolVersion": "0.9.1"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }

"""The AsyncAPI document says what the topology and the event models say, and nothing else."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

import pytest

from common.asyncapi import SCHEMA_VERSION, asyncapi_document, carried_events, describe_bus
from common.events import EVENT_TYPES, Event, TaskDispatched
from common.topology import DELAY_HEADER, rung_name, topology

NS = "orc-test"
SCHEMAS = "#/components/schemas/{model}"


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi_document(NS)


def _payload_ref(doc: dict[str, Any], channel: dict[str, Any]) -> str:
    (message_ref,) = (m["$ref"] for m in channel["messages"].values())
    message = _resolve(doc, message_ref)
    return str(message["payload"]["$ref"])


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[unquote(part).replace("~1", "/").replace("~0", "~")]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_is_asyncapi_3_and_every_reference_resolves(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == SCHEMA_VERSION
    refs = _refs(doc)
    assert refs
    for ref in refs:
        _resolve(doc, ref)
    assert set(doc["operations"]) == set(doc["channels"])


def test_every_binding_of_every_work_queue_is_a_channel_carrying_its_event(
    doc: dict[str, Any],
) -> None:
    t = topology(NS)
    carried = carried_events()
    for spec in t.queues:
        for key in spec.bindings:
            channel = doc["channels"][f"{spec.name}:{key}"]
            assert channel["address"] == key
            assert channel["bindings"]["amqp"]["queue"]["name"] == spec.name
            assert t.exchange in channel["description"]
            assert _payload_ref(doc, channel) == SCHEMAS.format(model=carried[key].__name__)
            operation = doc["operations"][f"{spec.name}:{key}"]
            assert operation["action"] == "receive"
            assert operation["bindings"]["amqp"]["cc"] == [key]


def test_dead_letter_and_delay_queues_are_in_it(doc: dict[str, Any]) -> None:
    t = topology(NS)
    for name in (t.dead_queue, t.dead_watch_queue):
        channel = doc["channels"][name]
        assert channel["bindings"]["amqp"]["queue"]["name"] == name
        assert t.dead_exchange in channel["description"]
    for rung in t.delays:
        channel = doc["channels"][rung.queue]
        assert channel["bindings"]["amqp"]["exchange"]["name"] == t.delay_exchange
        assert channel["bindings"]["amqp"]["exchange"]["type"] == "headers"
        assert f"{DELAY_HEADER}: {rung_name(rung.seconds)}" in channel["description"]
        assert _payload_ref(doc, channel) == SCHEMAS.format(model="TaskDispatched")
    named = {c["bindings"]["amqp"].get("queue", {}).get("name") for c in doc["channels"].values()}
    assert set(t.all_queues()) <= named | set(doc["channels"])


def test_every_event_is_in_it_under_a_routing_key_that_reaches_it(doc: dict[str, Any]) -> None:
    addresses: dict[str, set[str]] = {}
    for channel in doc["channels"].values():
        if channel.get("address"):
            addresses.setdefault(channel["address"], set()).add(_payload_ref(doc, channel))
    for model in EVENT_TYPES:
        keys = [k for k, m in carried_events().items() if m is model and k in addresses]
        if model is not TaskDispatched:
            assert model.routing_key in keys, model
        assert keys, model
        for key in keys:
            assert SCHEMAS.format(model=model.__name__) in addresses[key]


def test_notices_are_exactly_the_events_no_queue_of_the_topology_binds(
    doc: dict[str, Any],
) -> None:
    t = topology(NS)
    bound = {key for spec in t.queues for key in spec.bindings}
    sent = {
        c["address"]
        for name, c in doc["channels"].items()
        if doc["operations"][name]["action"] == "send" and c.get("address")
    }
    assert sent == {m.routing_key for m in EVENT_TYPES if not m.mandatory}
    # A mandatory event nobody binds would fail every publish of it.
    unbound = [m for m in EVENT_TYPES if m.mandatory and m.routing_key not in bound]
    assert unbound == [TaskDispatched]


@pytest.mark.parametrize("model", EVENT_TYPES, ids=lambda m: m.__name__)
def test_every_event_schema_is_the_models_json_schema(
    doc: dict[str, Any], model: type[Event]
) -> None:
    schemas = doc["components"]["schemas"]
    want = model.model_json_schema(ref_template=SCHEMAS)
    for name, nested in want.pop("$defs", {}).items():
        assert schemas[name] == nested
    assert schemas[model.__name__] == want


def test_queues_carry_the_topologys_declaration_arguments() -> None:
    t = topology(NS)
    broker = describe_bus(NS)
    subscribers = list(broker.subscribers)
    assert subscribers
    for sub in subscribers:
        assert sub.queue.arguments == t.arguments(sub.queue.name)
    delays = {r.queue: r for r in t.delays}
    delay_publishers = [p for p in broker.publishers if p.queue.name in delays]
    assert len(delay_publishers) == len(delays)
    for pub in delay_publishers:
        rung = delays[pub.queue.name]
        assert pub.queue.arguments == rung.arguments
        assert pub.queue.bind_arguments == rung.match


def test_names_follow_the_namespace_and_the_server_hides_credentials() -> None:
    doc = asyncapi_document("other-ns", broker_url="amqp://someone:s3cret@rabbit.example:5672/")
    assert all(name.startswith("other-ns.") for name in doc["channels"])
    text = json.dumps(doc)
    assert "s3cret" not in text
    assert "someone" not in text
    (server,) = doc["servers"].values()
    assert server["host"] == "rabbit.example:5672"


def test_output_is_in_name_order_so_written_files_are_stable(doc: dict[str, Any]) -> None:
    for section in (doc["channels"], doc["operations"], *doc["components"].values()):
        assert list(section) == sorted(section)

"""The bus as a documented interface: an AsyncAPI 3.0 document of every exchange, queue,
routing key and event schema of a namespace.

FastStream renders it from a `RabbitBroker` whose subscribers and publishers mirror
`common.topology` and `common.events`; no name is listed here a second time. The broker
is only described: it never connects, so nothing is declared on RabbitMQ.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.specification import AsyncAPI

from common.events import EVENT_TYPES, EVENTS_BY_ROUTING_KEY, Event, TaskDispatched
from common.states import TaskType
from common.topology import (
    DELAY_HEADER,
    REASON_HEADER,
    SOURCE_QUEUE_HEADER,
    Topology,
    rung_name,
    task_routing_key,
    topology,
)

SCHEMA_VERSION = "3.0.0"
# Where the document says the broker is when the caller does not say.
DEFAULT_SERVER = "amqp://localhost:5672/"

_CONVENTIONS = """\
Every message is a JSON event (`content_type: application/json`) published persistently
to the topic exchange `{exchange}` with its routing key; `message_id` is the event's
`event_id`, `type` its class name. An outside program starts a run by publishing `JobDue`
with routing key `job.due`, or several at once with `JobsDue` (`jobs.due`), as the
scheduler sends each tick's runs. A message that cannot be parsed or does not fit its schema
ends on the dead-letter queue `{dead}` with its reason in the header `{reason}`; one
delivered too often is dead-lettered there by the broker (header `x-death`). Either way
the messages behind it go on."""


def carried_events() -> dict[str, type[Event]]:
    """The event each routing key carries, task queue keys included.

    `TaskDispatched` is the one event not published under its own `routing_key`: it goes
    out with the key of its task queue (`task_routing_key`).
    """
    return {
        **EVENTS_BY_ROUTING_KEY,
        **{task_routing_key(t): TaskDispatched for t in TaskType},
    }


def asyncapi_document(namespace: str, *, broker_url: str = DEFAULT_SERVER) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the namespace's bus, as a JSON-ready dict.

    `broker_url` only names the server in the document; its user and password are left
    out. Nothing connects.
    """
    t = topology(namespace)
    spec = AsyncAPI(
        describe_bus(namespace, broker_url),
        title=f"orc-rust-ator bus (namespace {namespace})",
        version=_package_version(),
        description=_CONVENTIONS.format(
            exchange=t.exchange, dead=t.dead_queue, reason=REASON_HEADER
        ),
        schema_version=SCHEMA_VERSION,
    )
    document: dict[str, Any] = spec.to_specification().to_jsonable()
    return _sorted(document)


def describe_bus(namespace: str, broker_url: str = DEFAULT_SERVER) -> RabbitBroker:
    """A broker that is never started, with one subscriber per (queue, binding) and one
    publisher per notice and per delay rung, each with the topology's arguments."""
    t = topology(namespace)
    broker = RabbitBroker(broker_url)
    events = RabbitExchange(t.exchange, type=ExchangeType.TOPIC, durable=True)
    carried = carried_events()
    for spec in t.queues:
        for key in spec.bindings:
            model = carried[key]
            broker.subscriber(
                _queue(spec.name, spec.arguments, routing_key=key),
                events,
                title=f"{spec.name}:{key}",
                description=_binding_description(t, spec.name, spec.arguments, key, model),
            )(_handler(model))
    _describe_dead_letters(broker, t)
    _describe_delays(broker, t)
    bound = {key for spec in t.queues for key in spec.bindings}
    for model in EVENT_TYPES:
        if model.routing_key in bound or model is TaskDispatched:
            continue
        broker.publisher(
            exchange=events,
            routing_key=model.routing_key,
            mandatory=model.mandatory,
            persist=True,
            schema=model,
            title=f"{t.exchange}:{model.routing_key}",
            description=f"`{model.__name__}`, a notice: published on `{t.exchange}` with "
            f"routing key `{model.routing_key}` whether or not anyone listens. Bind a queue "
            "of your own to follow it.",
        )
    return broker


def _describe_dead_letters(broker: RabbitBroker, t: Topology) -> None:
    dead = RabbitExchange(t.dead_exchange, type=ExchangeType.FANOUT, durable=True)
    purposes = {
        t.dead_queue: "kept for people to inspect and replay",
        t.dead_watch_queue: "the coordinator's copy, to fail the task a dead letter belonged to",
    }
    for name, purpose in purposes.items():
        broker.subscriber(
            _queue(name, t.arguments(name)),
            dead,
            title=name,
            description=f"Every dead letter of the namespace, {purpose}: the original "
            f"message unchanged (any event, or bytes that are none), with the headers "
            f"`{REASON_HEADER}` (why) and `{SOURCE_QUEUE_HEADER}` (its routing key). Queue "
            f"`{name}` ({_arguments_text(t.arguments(name))}) on the fanout exchange "
            f"`{t.dead_exchange}`.",
        )


def _describe_delays(broker: RabbitBroker, t: Topology) -> None:
    delay = RabbitExchange(t.delay_exchange, type=ExchangeType.HEADERS, durable=True)
    for rung in t.delays:
        broker.publisher(
            _queue(rung.queue, rung.arguments, bind_arguments=rung.match),
            exchange=delay,
            headers={DELAY_HEADER: rung_name(rung.seconds)},
            persist=True,
            schema=TaskDispatched,
            title=rung.queue,
            description=f"A retry waiting {rung.seconds} s: a `TaskDispatched` published on "
            f"the headers exchange `{t.delay_exchange}` with the header "
            f"`{DELAY_HEADER}: {rung_name(rung.seconds)}` and its task queue's routing key "
            f"(`task.<type>`). It waits in `{rung.queue}` "
            f"({_arguments_text(rung.arguments)}); when its TTL expires RabbitMQ "
            f"dead-letters it to `{t.exchange}` under the same key, into its task queue.",
        )


def _queue(
    name: str,
    arguments: Mapping[str, Any],
    *,
    routing_key: str = "",
    bind_arguments: dict[str, Any] | None = None,
) -> RabbitQueue:
    """A queue object with exactly the topology's declaration arguments."""
    rest = {k: v for k, v in arguments.items() if k != "x-queue-type"}
    queue_type = QueueType(arguments.get("x-queue-type", QueueType.CLASSIC.value))
    # RabbitQueue's overloads want a literal queue type; ours is read from the topology.
    make: Callable[..., RabbitQueue] = RabbitQueue
    return make(
        name,
        queue_type,
        durable=True,
        arguments=rest,
        routing_key=routing_key,
        bind_arguments=bind_arguments,
    )


def _binding_description(
    t: Topology, queue: str, arguments: Mapping[str, Any], key: str, model: type[Event]
) -> str:
    carried = f"`{model.__name__}`"
    if model is TaskDispatched:
        carried += f" (named `{model.routing_key}` in the contract)"
    return (
        f"{carried} with routing key `{key}` on `{t.exchange}`, consumed from queue "
        f"`{queue}` ({_arguments_text(arguments)})."
    )


def _arguments_text(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in arguments.items())


def _handler(model: type[Event]) -> Callable[[Any], Awaitable[None]]:
    """A handler that is never called: its annotation gives FastStream the payload schema."""

    async def handler(event: Any) -> None:
        raise NotImplementedError

    handler.__annotations__ = {"event": model, "return": None}
    handler.__name__ = handler.__qualname__ = model.__name__
    handler.__doc__ = model.__doc__
    return handler


def _sorted(document: dict[str, Any]) -> dict[str, Any]:
    """The same document with its channels, operations and components in name order, so
    that two runs write the same file (FastStream keeps its endpoints in a hashed order)."""
    for section in ("channels", "operations"):
        document[section] = dict(sorted(document.get(section, {}).items()))
    components = document.get("components", {})
    for section in ("messages", "schemas"):
        if section in components:
            components[section] = dict(sorted(components[section].items()))
    return document


def _package_version() -> str:
    try:
        return version("orc-rust-ator")
    except PackageNotFoundError:
        return "0+unknown"

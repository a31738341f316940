"""Transport only: topology, confirmed publisher, consumer runtime with inbox, stream replay.

Depends on `mshale_fl.schemas` (the events) and `mshale_fl.store` (the inbox), never on agents.
"""

from mshale_fl.broker.connection import broker_user, connect
from mshale_fl.broker.consumer import (
    ConsumerRuntime,
    ConsumerStats,
    Delivery,
    Processor,
    current_delivery,
    run_worker,
)
from mshale_fl.broker.errors import (
    BrokerError,
    BrokerUnavailableError,
    PermanentError,
    PublishForbiddenError,
    PublishRejectedError,
    TopologyMismatchError,
    UnroutableError,
    redact_url,
)
from mshale_fl.broker.inbox import InboxProcessor, SqlHandler
from mshale_fl.broker.publisher import Publisher
from mshale_fl.broker.replay import StreamRecord, parse_start, replay, replay_records, tail_offset
from mshale_fl.broker.topology import (
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    EVENT_LOG_STREAM,
    EVENTS_EXCHANGE,
    ROLES,
    UNROUTABLE_EXCHANGE,
    UNROUTABLE_QUEUE,
    Role,
    declare_configured_topology,
    declare_topology,
    get_role,
)

__all__ = [
    "DEAD_LETTER_EXCHANGE",
    "DEAD_LETTER_QUEUE",
    "EVENTS_EXCHANGE",
    "EVENT_LOG_STREAM",
    "ROLES",
    "UNROUTABLE_EXCHANGE",
    "UNROUTABLE_QUEUE",
    "BrokerError",
    "BrokerUnavailableError",
    "ConsumerRuntime",
    "ConsumerStats",
    "Delivery",
    "InboxProcessor",
    "PermanentError",
    "Processor",
    "PublishForbiddenError",
    "PublishRejectedError",
    "Publisher",
    "Role",
    "SqlHandler",
    "StreamRecord",
    "TopologyMismatchError",
    "UnroutableError",
    "broker_user",
    "connect",
    "current_delivery",
    "declare_configured_topology",
    "declare_topology",
    "get_role",
    "parse_start",
    "redact_url",
    "replay",
    "replay_records",
    "run_worker",
    "tail_offset",
]

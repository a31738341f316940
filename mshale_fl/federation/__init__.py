"""Federated training transport: Flower's Grid over RabbitMQ, and the partner-side node runtime.

| module | what it owns |
|---|---|
| `wire.py` | exchange, queues, routing keys; Flower serde bodies and AMQP properties; hellos |
| `nodes.py` | partner id <-> Flower node id; presence from hellos; ledger eligibility |
| `grid.py` | `AmqpGrid` (a `flwr.serverapp.Grid` for an in-process ServerApp), `CohortGrid` |
| `node.py` | `PartnerNode`: consume instructions, run the ClientApp, reply |
| `loop.py` | an asyncio loop in a thread, for Flower's blocking Grid API |

Design notes: README.md beside this file.
"""

from mshale_fl.federation.grid import AmqpGrid, CohortGrid
from mshale_fl.federation.node import PartnerNode
from mshale_fl.federation.nodes import LedgerEligibility, NodeDirectory, node_id_for

__all__ = ["AmqpGrid", "CohortGrid", "LedgerEligibility", "NodeDirectory", "PartnerNode", "node_id_for"]

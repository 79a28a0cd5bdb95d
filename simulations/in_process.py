"""A Flower Grid that hands each Message straight to a ClientApp in this process: sweeps without Ray.

Benchmarks and studies run hundreds of federations on shared cores and cannot each pay Ray's start-up; the
messages, the ClientApp, the strategies and the coordinator's round loop are the product's own either way.
Each node gets a Context with `partition-id` (node id − 1), as Flower's simulation engine gives it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class InProcessGrid(Grid):
    """A Grid whose nodes are one ClientApp called in this process: app(message, context) per node."""

    def __init__(self, app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        self._app = app
        self._run = Run.create_empty(run_id)
        self._contexts = {node: Context(run_id=run_id, node_id=node, state=RecordDict(), run_config={},
                                        node_config={"partition-id": node - 1, "num-partitions": num_nodes})
                          for node in range(1, num_nodes + 1)}
        self._replies: dict[str, Message] = {}
        # Flower's ServerApp runtime stamps every Message with the task's identity; do what it does (compat/app.py)
        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, run_id, SUPERLINK_NODE_ID

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            message.metadata.__dict__["_run_id"] = self._run.run_id
            message.metadata.__dict__["_created_at"] = time.time()
            reply = self._app(message, self._contexts[message.metadata.dst_node_id])
            self._replies[message.metadata.message_id] = reply
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return list(self.pull_messages(self.push_messages(messages)))

"""collect(): who answered, and why each other site did not, as the deployment engine reports it."""

from __future__ import annotations

from uuid import uuid4

import pytest
from flwr.app import ConfigRecord, Error, Message, MetricRecord, RecordDict

from server.coordinator import collect

SUPERLINK_NODE_ID = 1  # the node id Flower's SuperLink signs its own error replies with
NODE_UNAVAILABLE = 5


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    """Messages can only be built inside a run; set the identity a ServerApp process has."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


class FakeGrid:
    """Answers like a SuperLink: a reply per live node, an error of its own for a node that stopped."""

    def __init__(self, live: dict[int, str], dead: set[int]):
        self.live, self.dead = live, dead

    def get_node_ids(self):
        return [*self.live, *self.dead]

    def send_and_receive(self, messages, timeout):
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())  # as Flower's grids do when pushing
            node = message.metadata.dst_node_id
            if node in self.live:
                content = RecordDict({"site": ConfigRecord({"site-id": self.live[node]}),
                                      "metrics": MetricRecord({"num-examples": 10.0})})
                replies.append(Message(content, reply_to=message))  # from the node it was sent to
            elif node in self.dead:
                reply = Message(Error(code=NODE_UNAVAILABLE, reason="Node Unavailable"), reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID  # as the SuperLink signs it
                replies.append(reply)
        return replies


def _query(nodes):
    return [Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=node,
                    message_type="query.test") for node in nodes]


def test_a_superlink_error_is_charged_to_the_site_it_was_about() -> None:
    names = {11: "alpha", 12: "beta", 13: "gamma"}
    replies = collect(FakeGrid(live={11: "alpha", 12: "beta"}, dead={13}), _query([11, 12, 13]), 5.0, names)
    assert set(replies.figures) == {"alpha", "beta"}
    assert replies.missing == {"gamma": "Node Unavailable"}


def test_silent_and_disconnected_sites_are_named_with_the_reason() -> None:
    names = {11: "alpha", 12: "beta", 13: "gamma"}
    # 12 is sent a message and never answers; 13 has left the node list, so nothing is sent to it
    replies = collect(FakeGrid(live={11: "alpha"}, dead=set()), _query([11, 12]), 5.0, names)
    assert replies.missing == {"beta": "no reply within 5 s", "gamma": "not connected: its SuperNode is offline"}

"""A client mod that logs, per message a simulated site handles, its wire size and the time spent inside the site.

Bytes are the size of the whole Message (metadata and records) serialised with Flower's own protobuf serde,
which is what the gRPC transport of a real deployment carries. The seconds are those spent in the ClientApp
(the site's own work: loading data, training, evaluating, its report); the coordinator's round time minus
them is what orchestration costs. Ray runs the mod inside its actor processes, so each process appends to
its own JSON-lines file in `folder` and the benchmark reads them all afterwards.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.serde import message_to_proto


def wire_bytes(message: Message) -> int:
    """Serialised size of a Message as the Fleet API's protobuf carries it."""
    return message_to_proto(message).ByteSize()


@dataclass(frozen=True)
class MessageLog:
    """Picklable (Ray ships the ClientApp with its mods to every actor); holds only the folder it writes to."""

    folder: Path

    def __call__(self, message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        received = wire_bytes(message)
        started_wall, started = time.time(), time.perf_counter()
        reply = call_next(message, context)
        seconds = time.perf_counter() - started
        config = message.content["config"] if "config" in message.content else {}
        entry = {"type": message.metadata.message_type, "split": str(config.get("split", "")),
                 "round": int(config.get("server-round", 0)),
                 "partition": int(context.node_config.get("partition-id", -1)), "pid": os.getpid(),
                 "received_bytes": received, "sent_bytes": wire_bytes(reply), "site_seconds": seconds,
                 "started": started_wall, "ended": started_wall + seconds}
        with open(self.folder / f"messages-{os.getpid()}.jsonl", "a") as file:
            file.write(json.dumps(entry) + "\n")
        return reply


def read_message_log(folder: Path) -> list[dict]:
    """Every entry the mod wrote under `folder`, in the order the messages started."""
    entries = [json.loads(line) for path in sorted(folder.glob("messages-*.jsonl"))
               for line in path.read_text().splitlines() if line.strip()]
    return sorted(entries, key=lambda e: e["started"])


def phase_of(entry: dict) -> str:
    """feature_summary, train, validation or test."""
    kind = entry["type"]
    if kind.startswith("query"):
        return kind.split(".", 1)[1] if "." in kind else kind
    if kind.startswith("evaluate"):
        return entry["split"] or "validation"
    return "train"


def communication_summary(entries: list[dict]) -> dict[str, dict[str, float]]:
    """Per phase: median bytes one site receives and sends per message, and the summed site seconds."""
    phases: dict[str, list[dict]] = {}
    for entry in entries:
        phases.setdefault(phase_of(entry), []).append(entry)
    return {phase: {"messages": len(items),
                    "received_bytes_median": median(e["received_bytes"] for e in items),
                    "sent_bytes_median": median(e["sent_bytes"] for e in items),
                    "received_bytes_max": max(e["received_bytes"] for e in items),
                    "sent_bytes_max": max(e["sent_bytes"] for e in items),
                    "site_seconds_total": sum(e["site_seconds"] for e in items)}
            for phase, items in sorted(phases.items())}

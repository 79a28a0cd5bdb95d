"""A Flower client mod that writes down what each message and its reply showed, for end-to-end tests."""

from __future__ import annotations

import json
import os
from pathlib import Path

from flwr.app import Context, Message


class MessageRecorder:
    """Records `record(message, reply)` (a JSON-able dict, or None to skip) for every message a site handles.

    It runs inside the simulation's worker processes, so each process appends to its own file (one JSON line per
    message) and `records` reads them all back.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for path in self.folder.glob("*.jsonl") for line in path.read_text().splitlines()]

    def record(self, message: Message, reply: Message) -> dict | None:
        raise NotImplementedError

    def __call__(self, message: Message, context: Context, call_next) -> Message:
        reply = call_next(message, context)
        seen = self.record(message, reply)
        if seen is not None:
            with open(self.folder / f"{os.getpid()}.jsonl", "a") as file:
                file.write(json.dumps(seen) + "\n")
        return reply

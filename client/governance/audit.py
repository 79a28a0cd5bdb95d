"""The site's audit log: every instruction it received, every reply it sent and every refusal, hash-chained.

One JSON object per line in `<state_dir>/audit_log.jsonl`, on the site's own disk. Each entry holds the hash of
the entry before it (`prev`) and its own hash over its content, so a changed, removed or reordered entry breaks
the chain and `oncofed-audit verify` names the first bad line. What is recorded is what a governance board asks
about (which run, round, phase and app; which records and figures left, their sizes, the ε they spent; why a
message was refused), never a value about a patient: replies are recorded by their keys and sizes only.

Appends are crash-safe: one write of one whole line, flushed and fsync'd, under an exclusive lock (a SuperNode
can run several ClientApp processes at once). A line left half-written by a crash is reported by `verify`; the
next append ends it and records its hash, so the gap stays visible and the chain continues.

Hand-written: no kept library writes an append-only hash-chained log (a database would add a server to a site).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.clientapp.typing import ClientAppCallable, Mod
from pydantic import BaseModel, Field

from client.flower import outbox
from shared.messages import (
    DATA_FINGERPRINT_KEY,
    HELD_OUT_KEY,
    METRICS_KEY,
    PHASE_KEY,
    PLAN_KEY,
    SERVER_ROUND_KEY,
    SITE_KEY,
    SPLIT_KEY,
)

logger = logging.getLogger(__name__)

AUDIT_FILE = "audit_log.jsonl"
GENESIS = "0" * 64  # the `prev` of the first entry
_TAIL_CHUNK = 65536
# figures of a reply that the log keeps as values: privacy accounting, which the site also keeps in its ledger
EPSILON_KEYS = {"epsilon": "epsilon", "epsilon-round": "epsilon_round"}


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry_hash(entry: dict[str, Any]) -> str:
    """SHA-256 over the entry's canonical JSON without its own `hash` (its `prev` included: the chain)."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def sha256_of(value: Any) -> str:
    """A stable hash of a JSON-able value (a configuration record, the pooled statistics)."""
    return hashlib.sha256(canonical({"value": value})).hexdigest()


def _last_line(handle: int, size: int) -> tuple[bytes, bytes]:
    """(the last complete line, the bytes after it that no newline ends: a torn tail) of an open file."""
    end, tail = size, b""
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        chunk = os.pread(handle, end - start, start)
        tail = chunk + tail
        lines = tail.split(b"\n")
        # lines[-1] is what follows the last newline; a complete line needs a newline before it, or file start
        if len(lines) >= 3 or (start == 0 and len(lines) >= 2):
            return lines[-2], lines[-1]
        end = start
    return b"", tail


class AuditLog:
    """An append-only, hash-chained JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Add one entry (its seq, time, prev and hash filled in) with one fsync'd write; the entry written."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        handle = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            size = os.fstat(handle).st_size
            last, torn = _last_line(handle, size)
            previous = json.loads(last) if last else None
            entry = {**entry, "seq": previous["seq"] + 1 if previous else 1,
                     "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                     "prev": previous["hash"] if previous else GENESIS}
            prefix = b""
            if torn:  # a crash stopped a write mid-line: end that line and say so in this entry
                entry["torn"] = {"bytes": len(torn), "sha256": hashlib.sha256(torn).hexdigest()}
                prefix = b"\n"
            entry["hash"] = entry_hash(entry)
            data = prefix + canonical(entry) + b"\n"
            while data:
                written = os.write(handle, data)
                data = data[written:]
            os.fsync(handle)
        finally:
            os.close(handle)  # releases the lock
        if created:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)  # the new file's name survives a crash too
            finally:
                os.close(directory)
        return entry


# --- verification --------------------------------------------------------------------------------------------

@dataclass
class Verification:
    entries: list[dict[str, Any]] = field(default_factory=list)
    problem: str | None = None  # the first bad line, in words; None when the chain holds
    torn_tail: bool = False  # the only problem is a half-written last line (a crash)
    recovered: list[int] = field(default_factory=list)  # lines a crash tore that a later entry ended and recorded

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def head(self) -> str:
        return self.entries[-1]["hash"] if self.entries else GENESIS


def verify(path: Path, head: str | None = None) -> Verification:
    """Walk the chain; stop at the first line that was changed, removed, moved, or left half-written.

    `head`: a hash the site recorded earlier (e.g. from a site report); the log must still hold it, which
    catches entries cut from the end (a chain alone cannot tell that its last entries are missing).
    """
    result = Verification()
    if not path.is_file():
        result.problem = f"{path}: no audit log here"
        return result
    lines = path.read_bytes().split(b"\n")
    complete, tail = lines[:-1], lines[-1]  # tail: bytes after the last newline (b"" when the file ends well)
    parsed = [_parse(raw) for raw in complete]
    previous_hash, previous_seq = GENESIS, 0
    for number, (raw, entry) in enumerate(zip(complete, parsed), start=1):
        following = parsed[number] if number < len(parsed) else None
        if following is not None and _records_torn(following, raw):
            result.recovered.append(number)  # a crash's half-written line, ended and recorded by the next append
            continue
        if entry is None:
            result.problem = f"line {number}: not a valid audit entry (the log was edited)"
            return result
        if "torn" in entry and (not result.recovered or result.recovered[-1] != number - 1):
            result.problem = f"line {number}: records a half-written line before it that is not there"
            return result
        if entry_hash(entry) != entry["hash"]:
            result.problem = f"line {number}: entry {entry['seq']} was changed (its hash does not match its content)"
            return result
        if entry["prev"] != previous_hash:
            result.problem = (f"line {number}: entry {entry['seq']} does not follow the entry before it: an entry "
                              f"was removed, inserted or moved here")
            return result
        if entry["seq"] != previous_seq + 1:
            result.problem = f"line {number}: entry number {entry['seq']}, expected {previous_seq + 1}"
            return result
        result.entries.append(entry)
        previous_hash, previous_seq = entry["hash"], entry["seq"]
    if tail:
        result.problem = (f"line {len(complete) + 1}: partially written ({len(tail)} bytes, no end of line): the "
                          f"writer stopped mid-entry (a crash); the {len(result.entries)} entries before it verify")
        result.torn_tail = True
        return result
    if head is not None and head not in {e["hash"] for e in result.entries}:
        result.problem = (f"the recorded head {head[:16]}… is not in the log: entries were removed from its end "
                          f"(or the head belongs to another site's log)")
    return result


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) and {"seq", "prev", "hash"} <= entry.keys() else None


def _records_torn(entry: dict[str, Any], raw: bytes) -> bool:
    torn = entry.get("torn")
    return isinstance(torn, dict) and torn.get("sha256") == hashlib.sha256(raw).hexdigest()


# --- what the log records about a message ---------------------------------------------------------------------

def _round_of(message: Message) -> int | None:
    config = message.content.get(PLAN_KEY) if message.has_content() else None
    if config is not None and SERVER_ROUND_KEY in config:
        return int(config[SERVER_ROUND_KEY])
    return None


def instruction_entry(message: Message, app_sha256: str | None, site_id: str) -> dict[str, Any]:
    """An instruction: who asked what (run, round, phase, type), which app ran it, hashes of what it carried."""
    entry: dict[str, Any] = {"kind": "instruction", "site": site_id, "run": int(message.metadata.run_id),
                             "message_type": message.metadata.message_type,
                             "message_id": message.metadata.message_id, "app_sha256": app_sha256}
    records: dict[str, Any] = {}
    for name, record in message.content.items() if message.has_content() else ():
        if isinstance(record, ConfigRecord):
            records[name] = {"type": "config", "sha256": sha256_of(_jsonable(dict(record)))}
        else:
            records[name] = _record_summary(record)
    entry["records"] = records
    config = message.content.get(PLAN_KEY) if message.has_content() else None
    if isinstance(config, ConfigRecord):
        entry["round"] = _round_of(message)
        for key in (PHASE_KEY, SPLIT_KEY, HELD_OUT_KEY):
            if key in config and config[key] != "":
                entry[key.replace("-", "_")] = config[key]
    return entry


def reply_entry(instruction: Message, reply: Message, site_id: str) -> dict[str, Any]:
    """A reply as it leaves: its records' keys and sizes and the ε it reports, or a refusal with its reason."""
    base = {"site": site_id, "run": int(instruction.metadata.run_id),
            "message_type": instruction.metadata.message_type, "reply_to": instruction.metadata.message_id,
            "round": _round_of(instruction)}
    if reply.has_error():
        return {**base, "kind": "refusal", "code": int(reply.error.code), "reason": str(reply.error.reason)}
    entry: dict[str, Any] = {**base, "kind": "reply",
                             "records": {name: _record_summary(record) for name, record in reply.content.items()}}
    site = reply.content.get(SITE_KEY)
    if isinstance(site, ConfigRecord) and DATA_FINGERPRINT_KEY in site:
        entry["data_fingerprint"] = str(site[DATA_FINGERPRINT_KEY])  # the keyed hash the site announced
    metrics = reply.content.get(METRICS_KEY)
    if isinstance(metrics, MetricRecord):
        for key, name in EPSILON_KEYS.items():
            if key in metrics:
                entry[name] = float(metrics[key])
    return entry


def _record_summary(record: Any) -> dict[str, Any]:
    if isinstance(record, ArrayRecord):
        return {"type": "arrays", "count": len(record),
                "values": int(sum(math.prod(array.shape) for array in record.values()))}
    if isinstance(record, MetricRecord):
        return {"type": "metrics", "keys": sorted(record.keys())}
    if isinstance(record, ConfigRecord):
        return {"type": "config", "keys": sorted(record.keys())}
    return {"type": type(record).__name__}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return {"sha256": hashlib.sha256(value).hexdigest()}
    return value


# --- the Flower mod -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuditTarget:
    """Where a message's entries go: the site's id and its audit log file."""

    site_id: str
    path: Path
    app_sha256: str | None


def audit_mod(target_of: Callable[[Context], AuditTarget]) -> Mod:
    """A Flower mod, outermost: it records each instruction before anything runs, and each reply as it leaves.

    If the log cannot be written, nothing runs (or the reply is replaced by a refusal): nothing leaves the
    site unrecorded.
    """

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        found: list[AuditTarget] = []
        refused = outbox.contain_failures(message, context, lambda m, c: found.append(target_of(c)))
        if refused is not None:  # no site configuration or run configuration to find the log by: nothing runs
            return refused
        target, log = found[0], AuditLog(found[0].path)
        try:
            log.append(instruction_entry(message, target.app_sha256, target.site_id))
        except Exception:  # noqa: BLE001 - no record, no run
            logger.exception("the site's audit log could not be written; the %s message is refused",
                             message.metadata.message_type)
            return outbox.refusal(message, outbox.ERROR_AUDIT, "the site could not write its audit log, so it "
                                                               "runs nothing; the reason is in the site's own log")
        try:
            reply = call_next(message, context)
        except Exception as error:
            log.append({**reply_entry(message, outbox.refusal(message, outbox.ERROR_SITE_FAILED, ""), target.site_id),
                        "reason": f"unhandled {type(error).__name__}"})
            raise
        try:
            log.append(reply_entry(message, reply, target.site_id))
        except Exception:  # noqa: BLE001
            logger.exception("the site's audit log could not record its reply; a refusal is sent instead")
            return outbox.refusal(message, outbox.ERROR_AUDIT, "the site could not record its reply in its audit "
                                                               "log, so it sends none")
        return reply

    return mod


# --- what a governance board reads ------------------------------------------------------------------------------

class RunActivity(BaseModel):
    """One run as the site's log saw it."""

    run: int
    instructions: int = 0
    replies: int = 0
    refusals: int = 0
    message_types: dict[str, int] = Field(default_factory=dict)
    epsilon: float | None = Field(None, description="the site's cumulative ε after the run's last training reply")
    refusal_reasons: list[str] = Field(default_factory=list)
    apps: list[str] = Field(default_factory=list, description="app hashes the run's instructions ran under")


class AuditSummary(BaseModel):
    """The log's summary for the site report and `oncofed-audit summary`."""

    path: str
    verified: bool
    problem: str | None = None
    entries: int
    head: str = Field(description="hash of the last entry; note it to detect later removal of entries")
    first_time: str | None = None
    last_time: str | None = None
    instructions: int = 0
    replies: int = 0
    refusals: int = 0
    runs: list[RunActivity] = Field(default_factory=list)


def summarise(path: Path) -> AuditSummary:
    """Counts per run over the entries that verify (up to the first bad line, when there is one)."""
    checked = verify(path)
    runs: dict[int, RunActivity] = {}
    for entry in checked.entries:
        activity = runs.setdefault(int(entry.get("run", 0)), RunActivity(run=int(entry.get("run", 0))))
        kind = entry.get("kind")
        if kind == "instruction":
            activity.instructions += 1
            kind_name = str(entry.get("message_type"))
            activity.message_types[kind_name] = activity.message_types.get(kind_name, 0) + 1
            if entry.get("app_sha256") and entry["app_sha256"] not in activity.apps:
                activity.apps.append(entry["app_sha256"])
        elif kind == "reply":
            activity.replies += 1
            if entry.get("epsilon") is not None:
                activity.epsilon = max(activity.epsilon or 0.0, float(entry["epsilon"]))
        elif kind == "refusal":
            activity.refusals += 1
            if entry.get("reason") and entry["reason"] not in activity.refusal_reasons:
                activity.refusal_reasons.append(str(entry["reason"]))
    ordered = list(runs.values())
    return AuditSummary(path=str(path), verified=checked.ok, problem=checked.problem, entries=len(checked.entries),
                        head=checked.head, first_time=checked.entries[0]["time"] if checked.entries else None,
                        last_time=checked.entries[-1]["time"] if checked.entries else None,
                        instructions=sum(r.instructions for r in ordered), replies=sum(r.replies for r in ordered),
                        refusals=sum(r.refusals for r in ordered), runs=ordered)


def _log_path(argument: Path) -> Path:
    return argument / AUDIT_FILE if argument.is_dir() else argument


def main(argv: list[str] | None = None) -> int:
    """`oncofed-audit verify|summary <log or state dir>`."""
    parser = argparse.ArgumentParser(prog="oncofed-audit", description="Check and summarise a site's audit log.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("verify", help="check the hash chain; exit 1 at a changed, removed or moved entry, "
                                               "3 at a half-written last line (a crash)")
    check.add_argument("log", type=Path, help=f"the audit log, or the site's state dir holding {AUDIT_FILE}")
    check.add_argument("--head", help="a head hash noted earlier (site report, previous verify): must still be there")
    show = commands.add_parser("summary", help="messages in and out, refusals and ε per run")
    show.add_argument("log", type=Path, help=f"the audit log, or the site's state dir holding {AUDIT_FILE}")
    show.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    path = _log_path(args.log)
    if args.command == "verify":
        checked = verify(path, args.head)
        if checked.ok:
            recovered = f"; {len(checked.recovered)} line(s) a crash left half-written, recorded by the next entry " \
                        f"(lines {', '.join(map(str, checked.recovered))})" if checked.recovered else ""
            print(f"{path}: {len(checked.entries)} entries verify; head {checked.head}{recovered}")
            return 0
        print(f"{path}: FAILED at {checked.problem}", file=sys.stderr)
        return 3 if checked.torn_tail else 1
    summary = summarise(path)
    if args.json:
        print(summary.model_dump_json(indent=1))
    else:
        state = "verified" if summary.verified else f"NOT verified: {summary.problem}"
        print(f"{path}: {summary.entries} entries, {state}; head {summary.head}")
        print(f"{'run':>20} {'in':>5} {'out':>5} {'refused':>8} {'ε after':>8}  app")
        for run in summary.runs:
            epsilon = f"{run.epsilon:.3f}" if run.epsilon is not None else "—"
            apps = ", ".join(app[:12] for app in run.apps) or "—"
            print(f"{run.run:>20} {run.instructions:>5} {run.replies:>5} {run.refusals:>8} {epsilon:>8}  {apps}")
            for reason in run.refusal_reasons:
                print(f"{'':>20} refused: {reason}")
    return 0 if summary.verified else 1


if __name__ == "__main__":
    sys.exit(main())

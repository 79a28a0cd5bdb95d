"""The site's audit log: hash-chained, crash-safe, and what it records of a message (keys and sizes, not values)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from client.flower import outbox
from client.governance.audit import AUDIT_FILE, AuditLog, AuditTarget, audit_mod, main, summarise, verify
from tests.factories import tiny_model


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def _filled(tmp_path, entries: int = 5):
    log = AuditLog(tmp_path / AUDIT_FILE)
    for number in range(entries):
        log.append({"kind": "instruction", "run": 7, "message_type": "train", "round": number})
    return log.path


def _lines(path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def test_a_log_written_by_appends_verifies_and_chains(tmp_path):
    path = _filled(tmp_path)
    checked = verify(path)
    assert checked.ok and len(checked.entries) == 5
    assert [e["seq"] for e in checked.entries] == [1, 2, 3, 4, 5]
    assert all(later["prev"] == earlier["hash"] for earlier, later in zip(checked.entries, checked.entries[1:]))
    assert main(["verify", str(path)]) == 0
    assert main(["verify", str(tmp_path)]) == 0  # the state dir works too


def test_a_changed_entry_is_named(tmp_path, capsys):
    path = _filled(tmp_path)
    lines = _lines(path)
    lines[2] = lines[2].replace('"round":2', '"round":9')
    path.write_text("".join(lines))
    assert main(["verify", str(path)]) == 1
    assert "line 3: entry 3 was changed" in capsys.readouterr().err


def test_a_changed_entry_with_its_hash_recomputed_breaks_the_next_link(tmp_path):
    from client.governance.audit import entry_hash

    path = _filled(tmp_path)
    lines = _lines(path)
    forged = json.loads(lines[1])
    forged["round"] = 42
    forged["hash"] = entry_hash(forged)
    lines[1] = json.dumps(forged) + "\n"
    path.write_text("".join(lines))
    checked = verify(path)
    assert not checked.ok and checked.problem.startswith("line 3: entry 3 does not follow the entry before it")


@pytest.mark.parametrize("remove, bad_line", [(0, 1), (2, 3)])
def test_a_removed_entry_is_named(tmp_path, remove, bad_line):
    path = _filled(tmp_path)
    lines = _lines(path)
    del lines[remove]
    path.write_text("".join(lines))
    checked = verify(path)
    assert not checked.ok and checked.problem.startswith(f"line {bad_line}:")
    assert "removed, inserted or moved" in checked.problem


def test_swapped_entries_are_named(tmp_path):
    path = _filled(tmp_path)
    lines = _lines(path)
    lines[1], lines[3] = lines[3], lines[1]
    path.write_text("".join(lines))
    checked = verify(path)
    assert not checked.ok and checked.problem.startswith("line 2:")


def test_entries_cut_from_the_end_are_caught_against_a_recorded_head(tmp_path, capsys):
    path = _filled(tmp_path)
    head = verify(path).head
    path.write_text("".join(_lines(path)[:-1]))
    assert verify(path).ok  # a chain alone cannot know its end is missing
    assert main(["verify", "--head", head, str(path)]) == 1
    assert "entries were removed from its end" in capsys.readouterr().err


def test_a_half_written_last_line_is_reported_then_recorded_by_the_next_append(tmp_path, capsys):
    path = _filled(tmp_path, 3)
    data = path.read_bytes()
    path.write_bytes(data[:-40])  # a crash mid-write of the third entry
    assert main(["verify", str(path)]) == 3
    assert "line 3: partially written" in capsys.readouterr().err
    AuditLog(path).append({"kind": "instruction", "run": 8, "message_type": "evaluate"})
    checked = verify(path)
    assert checked.ok and checked.recovered == [3]
    assert [e["seq"] for e in checked.entries] == [1, 2, 3]  # the torn entry's number is taken by the next
    assert checked.entries[-1]["torn"]["bytes"] == len(data) - 40 - data[:-40].rindex(b"\n") - 1
    # the recovery mark cannot be moved onto an edit: a garbled line that no entry records is tampering
    lines = _lines(path)
    lines[0] = "garbage\n"
    path.write_text("".join(lines))
    assert verify(path).problem.startswith("line 1: not a valid audit entry")


_APPENDER = """
import sys
from pathlib import Path
from client.governance.audit import AuditLog
log = AuditLog(Path(sys.argv[1]))
number = 0
while True:
    number += 1
    log.append({"kind": "reply", "run": 1, "message_type": "train", "round": number,
                "records": {"metrics": {"type": "metrics", "keys": ["k%d" % i for i in range(200)]}}})
"""


def test_a_process_killed_while_appending_leaves_a_log_that_verifies(tmp_path):
    path = tmp_path / AUDIT_FILE
    writer = subprocess.Popen([sys.executable, "-c", _APPENDER, str(path)], cwd=os.getcwd())
    try:
        deadline = time.monotonic() + 60
        while (not path.exists() or path.stat().st_size < 200_000) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    checked = verify(path)
    assert checked.ok or checked.torn_tail, checked.problem
    assert len(checked.entries) > 50
    AuditLog(path).append({"kind": "instruction", "run": 2, "message_type": "train"})
    after = verify(path)
    assert after.ok, after.problem
    assert len(after.entries) == len(checked.entries) + 1


def _instruction() -> Message:
    return Message(RecordDict({"config": ConfigRecord({"server-round": 3, "phase": "federated", "dp": True})}),
                   dst_node_id=1, message_type="train")


def test_the_mod_records_the_instruction_and_the_reply_by_keys_and_sizes(tmp_path):
    model = tiny_model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    target = AuditTarget(site_id="alpha", path=tmp_path / AUDIT_FILE, app_sha256="ab" * 32)

    def handler(message, context):
        return outbox.reply(message, site_id="alpha", metrics={"num-examples": 120, "train-loss": 1.2345678,
                                                               "epsilon": 0.8125, "epsilon-round": 0.5},
                            min_cell_size=10, arrays=ArrayRecord(model.state_dict()), expected_arrays=shapes)

    def refusing(message, context):
        return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, "site alpha: privacy budget exhausted")

    mod = audit_mod(lambda context: target)
    mod(_instruction(), None, handler)
    mod(_instruction(), None, refusing)
    checked = verify(target.path)
    assert checked.ok
    instruction, reply, _, refusal = checked.entries
    assert instruction["kind"] == "instruction" and instruction["round"] == 3 and instruction["phase"] == "federated"
    assert instruction["app_sha256"] == "ab" * 32 and len(instruction["records"]["config"]["sha256"]) == 64
    assert reply["kind"] == "reply" and reply["epsilon"] == 0.8125 and reply["epsilon_round"] == 0.5
    assert reply["records"]["metrics"]["keys"] == ["epsilon", "epsilon-round", "num-examples", "train-loss"]
    assert reply["records"]["arrays"] == {"type": "arrays", "count": len(shapes),
                                          "values": sum(v.numel() for v in model.state_dict().values())}
    assert "1.2345678" not in target.path.read_text()  # figures other than ε are not kept, only their names
    assert refusal["kind"] == "refusal" and refusal["code"] == outbox.ERROR_BUDGET_EXHAUSTED
    summary = summarise(target.path)
    assert (summary.instructions, summary.replies, summary.refusals) == (2, 1, 1)
    assert summary.runs[0].epsilon == 0.8125 and summary.runs[0].refusal_reasons == [
        "site alpha: privacy budget exhausted"]


def test_a_site_that_cannot_write_its_log_runs_nothing(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state dir should be")
    ran = []
    mod = audit_mod(lambda context: AuditTarget(site_id="alpha", path=blocker / AUDIT_FILE, app_sha256=None))
    reply = mod(_instruction(), None, lambda m, c: ran.append(1))
    assert reply.has_error() and reply.error.code == outbox.ERROR_AUDIT and not ran


def test_the_summary_command_prints_each_run(tmp_path, capsys):
    path = _filled(tmp_path, 2)
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "2 entries, verified" in out and "       7     2     0" in out

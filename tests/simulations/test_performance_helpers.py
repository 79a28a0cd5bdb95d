"""The performance benchmark's measuring instruments: process-tree memory, message bytes, the message log."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from simulations.benchmarks.message_log import (
    MessageLog,
    communication_summary,
    read_message_log,
    wire_bytes,
)
from simulations.benchmarks.performance import summarise_job, write_scaled_cohort
from simulations.benchmarks.process_memory import MemoryPeak, TreeSampler, process_tree, tree_memory

TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def fake_proc(root, processes: dict[int, tuple[int, str, int, int]]):
    """/proc with pid → (parent, command name, RSS KiB, PSS KiB)."""
    for pid, (parent, name, rss, pss) in processes.items():
        folder = root / str(pid)
        folder.mkdir()
        (folder / "stat").write_text(f"{pid} ({name}) S {parent} 1 1 0 -1\n")
        (folder / "status").write_text(f"Name:\t{name}\nVmRSS:\t  {rss} kB\nThreads:\t1\n")
        (folder / "smaps_rollup").write_text(f"Rss:  {rss} kB\nPss:  {pss} kB\n")
    (root / "self").mkdir()  # not a pid: ignored
    return root


def test_the_tree_holds_every_descendant_and_nothing_else(tmp_path):
    proc = fake_proc(tmp_path, {1: (0, "init", 10, 10), 100: (1, "python", 1000, 600),
                                101: (100, "gcs server) S 7", 200, 100),  # a name with ") " in it
                                102: (101, "ray::ClientAppActor.run", 700, 300), 200: (1, "other", 5000, 5000)})
    assert process_tree(100, proc) == [100, 101, 102]
    assert tree_memory(100, proc) == ((1000 + 200 + 700) * 1024, (600 + 100 + 300) * 1024, 3)


def test_the_sampler_sees_a_child_that_holds_memory():
    child = subprocess.Popen([sys.executable, "-c", "import time; block = bytearray(300 * 2**20); time.sleep(1.5)"])
    with TreeSampler(child.pid, interval_s=0.05) as sampler:
        child.wait()
    assert sampler.peak.samples >= 3
    assert sampler.peak.rss_bytes >= 300 * 2**20
    assert 300 * 2**20 <= sampler.peak.pss_bytes <= sampler.peak.rss_bytes


def message_with(elements: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord([np.zeros(elements, dtype=np.float32)]),
                          "config": ConfigRecord({"server-round": 3})})
    return Message(content, dst_node_id=1, message_type="train")


def test_wire_bytes_grow_by_the_array_bytes():
    small, large = wire_bytes(message_with(1000)), wire_bytes(message_with(3000))
    assert small > 4000
    assert 8000 <= large - small <= 8010  # 2000 more float32, plus a few bytes of protobuf length prefixes


def test_the_message_log_records_bytes_and_seconds_of_each_message(tmp_path):
    log = MessageLog(tmp_path)
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 4}, state=RecordDict(), run_config={})
    incoming = message_with(1000)
    answer = Message(RecordDict(), reply_to=incoming)
    reply = log(incoming, context, lambda message, _: answer)
    assert reply is answer  # the mod passes the site's reply on untouched
    [entry] = read_message_log(tmp_path)
    assert entry["type"] == "train" and entry["round"] == 3 and entry["partition"] == 4
    assert entry["received_bytes"] == wire_bytes(incoming)
    assert entry["sent_bytes"] == wire_bytes(reply) < entry["received_bytes"]
    assert entry["site_seconds"] >= 0
    summary = communication_summary([entry, {**entry, "type": "evaluate", "split": "test", "sent_bytes": 7}])
    assert summary["train"]["messages"] == 1 and summary["test"]["sent_bytes_median"] == 7


def test_a_scaled_cohort_has_the_asked_number_of_distinct_sites(tmp_path):
    write_scaled_cohort(tmp_path / "cohort", num_sites=8, patients_per_site=15)
    folders = sorted(p for p in (tmp_path / "cohort").iterdir() if (p / "patients.csv").is_file())
    assert len(folders) == 8 and len({p.name for p in folders}) == 8
    assert folders[0].name.startswith(("coastal", "metro", "pacific", "southside", "valley", "womens"))
    assert all(len(pd.read_csv(p / "patients.csv")) == 15 for p in folders)


def test_a_run_is_split_into_start_harmonisation_rounds_test_and_shutdown():
    def entry(kind, split, round_, started, ended, pid=1):
        return {"type": kind, "split": split, "round": round_, "partition": 0, "pid": pid, "received_bytes": 10,
                "sent_bytes": 5, "site_seconds": ended - started, "started": started, "ended": ended}

    launched = 1000.0
    entries = [entry("query.feature_summary", "", 0, 1010.0, 1011.0), entry("train", "", 1, 1012.0, 1015.0),
               entry("evaluate", "validation", 1, 1016.0, 1016.5, pid=2), entry("evaluate", "test", 1, 1017.0, 1027.0)]
    metrics = {"rounds": [{"round": 1, "seconds": {"train": 3.5, "aggregate": 0.1, "evaluate": 0.9}}],
               "test_missing": {}, "test_mean": {"response-auc": 0.7}}
    summary = summarise_job(30.0, launched, MemoryPeak(rss_bytes=3, pss_bytes=2, processes=9, samples=4),
                            metrics, entries)
    assert summary["phases_s"] == {"start_to_first_site_message": 10.0, "harmonisation": 1.0, "rounds": 4.5,
                                   "final_test_evaluation_and_reports": 10.0, "after_last_site_message": 3.0}
    assert summary["rounds"][0]["site_seconds_train"] == 3.0 and summary["rounds"][0]["site_seconds_validation"] == 0.5
    assert summary["workers"] == 2 and summary["peak_pss_bytes"] == 2


def test_the_benchmark_calls_a_run_quiet_only_when_the_operator_says_so_and_the_load_agrees():
    from simulations.benchmarks.performance import quiet_statement

    assert quiet_statement(True, (0.2, 0.1, 0.3))["quiet"] is True
    assert quiet_statement(False, (0.2, 0.1, 0.3))["quiet"] is False  # nobody said nothing else was running
    loaded = quiet_statement(True, (0.2, 3.0, 5.0))  # the last 5 minutes were busy
    assert loaded["quiet"] is False and loaded["load_confirms"] is False


def test_the_default_benchmark_keeps_the_issue_ratios_and_trims_only_the_largest_scale_point():
    from simulations.benchmarks.performance import argument_parser, settings_from

    settings = settings_from(argument_parser().parse_args([]))
    assert not settings.quick and settings.repeats == 3  # main job, plain loop and DP timings: medians of 3
    assert settings.scale_sites == (3, 10, 30, 100)  # N sites vs 3 at the same total, up to 100 sites
    assert settings.growing_sites == (3, 10, 30)  # 100 × 775 patients only on request (--growing-sites)
    assert settings_from(argument_parser().parse_args(["--growing-sites", "3,100"])).growing_sites == (3, 100)


def test_a_deployed_round_is_compared_phase_by_phase():
    from simulations.benchmarks.deployed_round import round_seconds

    metrics = {"rounds": [{"seconds": {"train": 3.0, "aggregate": 0.5, "evaluate": 1.5}},
                          {"seconds": {"train": 2.0, "aggregate": 0.25, "evaluate": 0.75}}]}
    assert [r["total"] for r in round_seconds(metrics)] == [5.0, 3.0]

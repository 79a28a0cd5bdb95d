"""Peak memory of a whole process tree (a simulation's driver, Ray's GCS/raylet and every ClientApp actor).

Read from Linux's /proc, because psutil is not among the project's dependencies and two files per process
are all it takes. Two sums are kept, because they count pages shared between processes differently:
- RSS (`VmRSS` of /proc/PID/status): each process's resident pages in full, so a page shared by k
  processes (torch's libraries mapped by every actor, copy-on-write pages of a fork) is counted k times:
  an upper bound on what the tree occupies;
- PSS (`Pss` of /proc/PID/smaps_rollup): a shared page counts 1/k in each of its k processes, so the sum
  is the tree's real share of physical memory (pages shared with processes outside the tree count in part).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

PROC = Path("/proc")


def _parent_of(stat_text: str) -> int:
    """The parent pid from a /proc/PID/stat line; the command name in brackets may hold spaces."""
    return int(stat_text.rsplit(")", 1)[1].split()[1])


def process_tree(root: int, proc: Path = PROC) -> list[int]:
    """`root` and every descendant alive now (children re-parented away from the tree are not followed)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = _parent_of((entry / "stat").read_text())
        except (OSError, IndexError, ValueError):  # the process ended while we read it
            continue
        children.setdefault(parent, []).append(int(entry.name))
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        tree.append(pid)
        frontier.extend(children.get(pid, []))
    return sorted(tree)


def _kib_field(text: str, name: str) -> int:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def tree_memory(root: int, proc: Path = PROC) -> tuple[int, int, int]:
    """(summed RSS bytes, summed PSS bytes, number of processes) of the tree under `root` right now."""
    rss = pss = count = 0
    for pid in process_tree(root, proc):
        try:
            rss += _kib_field((proc / str(pid) / "status").read_text(), "VmRSS") * 1024
            pss += _kib_field((proc / str(pid) / "smaps_rollup").read_text(), "Pss") * 1024
            count += 1
        except OSError:  # ended between listing and reading
            continue
    return rss, pss, count


@dataclass
class MemoryPeak:
    """The largest sums seen while sampling; each maximum is taken on its own."""

    rss_bytes: int = 0
    pss_bytes: int = 0
    processes: int = 0
    samples: int = 0

    def add(self, rss: int, pss: int, count: int) -> None:
        self.rss_bytes = max(self.rss_bytes, rss)
        self.pss_bytes = max(self.pss_bytes, pss)
        self.processes = max(self.processes, count)
        self.samples += 1


@dataclass
class TreeSampler:
    """Samples the tree under `root` every `interval_s` on a background thread until stopped."""

    root: int
    interval_s: float = 0.25
    proc: Path = PROC
    peak: MemoryPeak = field(default_factory=MemoryPeak)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak.add(*tree_memory(self.root, self.proc))
            self._stop.wait(self.interval_s)


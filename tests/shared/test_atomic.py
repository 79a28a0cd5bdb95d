import json
import os
from pathlib import Path

import pytest
import torch

from shared.atomic import write_atomically


def test_text_bytes_and_streams_are_written_whole(tmp_path: Path) -> None:
    assert write_atomically(tmp_path / "deep" / "a.txt", "ε = 3\n").read_text(encoding="utf-8") == "ε = 3\n"
    assert write_atomically(tmp_path / "b.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    write_atomically(tmp_path / "c.pt", lambda stream: torch.save({"w": torch.ones(2)}, stream))
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "c.pt", "deep"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    out.write_text("old")

    def half_then_fail(stream) -> None:
        stream.write(b'{"cohort_size": ')
        json.dumps({"cohort_size": object()})  # fails half-way through serialising

    with pytest.raises(TypeError):
        write_atomically(out, half_then_fail)
    assert out.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_mode_is_applied(tmp_path: Path) -> None:
    assert os.stat(write_atomically(tmp_path / "ledger.json", "{}", mode=0o600)).st_mode & 0o777 == 0o600
    assert os.stat(write_atomically(tmp_path / "report.html", "<p>")).st_mode & 0o777 == 0o644

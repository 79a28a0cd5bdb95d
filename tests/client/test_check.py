"""The site check command: exit codes, the printed report, and a JSON summary that is whole or absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from client.data.check import EXIT_BAD_CONFIG, EXIT_USABLE, EXIT_VIOLATIONS, main, suppress
from tests.client.test_site_data_examples import example_contract_frame

REPO = Path(__file__).resolve().parents[2]


def make_site(folder: Path, frame: pd.DataFrame, extra: str = "") -> Path:
    frame.to_csv(folder / "patients.csv", index=False)
    config = folder / "site.toml"
    config.write_text('site_id = "check-site"\ndisplay_name = "Check Site"\ntarget_epsilon = 3.0\n'
                      f'{extra}\n[data]\npath = "patients.csv"\n', encoding="utf-8")
    return config


def test_usable_site_prints_a_summary_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = example_contract_frame(60, seed=9)
    config = make_site(tmp_path, frame)
    out = tmp_path / "reports" / "summary.json"
    assert main(["--site-config", str(config), "--json", str(out)]) == EXIT_USABLE
    printed = capsys.readouterr().out
    assert "Cohort: 60 patients" in printed and "Usable: yes" in printed
    summary = json.loads(out.read_text())
    assert summary["cohort_size"] == 60 and summary["site_id"] == "check-site"
    assert summary["modalities_present"]["clinical"] == 60
    assert summary["missing"]["age_years"] == 0 and summary["missing_percent"]["age_years"] == 0.0
    events = int((frame["pfs_event"] == 1).sum())
    assert summary["pfs"] == {"events": events, "censored": 60 - events, "missing": 0}
    for code in ("CR", "PR", "SD", "PD"):
        count = int((frame["best_response"] == code).sum())
        assert summary["best_response"][code] == (count if count >= 10 or count == 0 else "<10")
    assert [p.name for p in out.parent.iterdir()] == ["summary.json"]  # no temporary file left behind


def test_small_counts_are_suppressed(tmp_path: Path) -> None:
    frame = example_contract_frame(30, seed=9)
    frame["os_event"] = [1.0] * 3 + [0.0] * 27
    out = tmp_path / "summary.json"
    assert main(["--site-config", str(make_site(tmp_path, frame, "min_cell_size = 5")), "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["os"] == {"events": "<5", "censored": 27, "missing": 0}
    assert all(value == 0 or value == "<5" or value >= 5 for value in summary["missing"].values())
    assert all(percent is None for column, percent in summary["missing_percent"].items()
               if summary["missing"][column] == "<5")


def test_unusable_data_exits_non_zero_lists_every_violation_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = example_contract_frame(30, seed=9).astype(object)
    frame.loc[3, "regimen"] = "FOLFOXIRI"
    frame.loc[7, "pfs_days"] = -3.0
    config = make_site(tmp_path, frame)
    out = tmp_path / "summary.json"
    out.write_text('{"previous": "run"}')
    assert main(["--site-config", str(config), "--json", str(out)]) == EXIT_VIOLATIONS
    report = capsys.readouterr()
    assert "2 data-contract violation(s)" in report.err
    assert f"{tmp_path / 'patients.csv'} row 4, column 'regimen': unknown code" in report.err
    assert "row 8, column 'pfs_days'" in report.err and "Usable: no" in report.err
    assert out.read_text() == '{"previous": "run"}'  # nothing written downstream
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patients.csv", "site.toml", "summary.json"]


def test_bad_config_exits_with_its_own_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "site.toml"
    config.write_text('site_id = "x"\ndisplay_name = "X"\ntarget_epsilon = -1\n[data]\npath = "p.csv"\n')
    assert main(["--site-config", str(config), "--json", str(tmp_path / "s.json")]) == EXIT_BAD_CONFIG
    assert "field 'target_epsilon'" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_suppress() -> None:
    assert [suppress(c, 10) for c in (0, 1, 9, 10, 250)] == [0, "<10", "<10", 10, 250]


def test_runs_as_a_module(tmp_path: Path) -> None:
    config = make_site(tmp_path, example_contract_frame(20, seed=2))
    result = subprocess.run([sys.executable, "-m", "client.data.check", "--site-config", str(config)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Cohort: 20 patients" in result.stdout


def test_the_fingerprint_printed_is_the_one_the_site_sends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from client.data.fingerprint import data_fingerprint
    from client.data.loader import load_site_frame
    from shared.site_config import SiteConfig

    frame = example_contract_frame(60, seed=9)
    config = make_site(tmp_path, frame)
    assert main(["--site-config", str(config), "--fingerprint"]) == EXIT_USABLE
    printed = capsys.readouterr().out.rsplit(": ", 1)[1].strip()
    site = SiteConfig.from_file(config)
    assert printed == data_fingerprint(load_site_frame(site), site.state_dir)  # what feature_summary sends
    frame.loc[0, "age_years"] = frame.loc[0, "age_years"] + 1
    make_site(tmp_path, frame)
    assert main(["--site-config", str(config), "--fingerprint"]) == EXIT_USABLE
    assert capsys.readouterr().out.rsplit(": ", 1)[1].strip() != printed  # another version of the data

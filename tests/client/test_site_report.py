"""The site evaluation end to end, and its report rendered in headless Chromium with every plot present.

Set ONCOFED_SCREENSHOT_DIR to keep the report and a full-page screenshot for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from client.evaluation.site_report import SiteEvaluation, evaluate_site, write_site_report
from shared.html_report import PrivacyRound, PrivacySpent, RunInfo
from shared.metrics import EvaluationSettings
from tests.browser import rendered_report
from tests.shared.test_metrics_support import contract_only, make_site_table, predictions_from_prognosis

SHAP = {"response": {"ECOG": 0.31, "stage group": 0.22, "age": 0.12, "HER2 positive": 0.09, "PD-L1 TPS": 0.07,
                     "tumour size": 0.05, "TP53": 0.03},
        "pfs": {"ECOG": 61.0, "stage group": 40.0, "age": 12.0}, "os": {"ECOG": 90.0, "stage group": 55.0}}


@pytest.fixture(scope="module")
def evaluation() -> SiteEvaluation:
    rng = np.random.default_rng(41)
    train = contract_only(make_site_table(rng, 350, follow_up_days=1400))
    test = make_site_table(rng, 220, follow_up_days=1400)
    predictions = predictions_from_prognosis(test, rng)
    return evaluate_site("hospital-north", train, contract_only(test), predictions, SHAP,
                         PrivacySpent(epsilon=3.1, delta=1e-5, accountant="rdp", noise_multiplier=1.1,
                                      max_grad_norm=1.0),
                         RunInfo(run_id="run-test", model_checkpoint="round-12", rounds_completed=12),
                         rng, EvaluationSettings(n_bootstrap=20))


def test_evaluation_holds_model_baselines_subgroups(evaluation: SiteEvaluation) -> None:
    assert evaluation.model.response.auc.value > 0.6
    assert [b.name for b in evaluation.baselines] == ["ECOG alone", "Stage alone", "Single biomarker",
                                                       "Clinical model"]
    for baseline in evaluation.baselines:
        metrics = [c.metric for c in baseline.comparisons]
        assert metrics == ["Response AUC", "PFS Harrell's C", "OS Harrell's C"]
        for comparison in baseline.comparisons:
            if comparison.difference.available:
                expected = comparison.model.value - comparison.baseline.value
                assert comparison.difference.value == pytest.approx(expected)
                assert comparison.relative_improvement_percent == pytest.approx(
                    100 * expected / comparison.baseline.value)
    assert len(evaluation.subgroups) > 15
    # JSON round trip: a report can be re-rendered from the saved evaluation alone.
    assert SiteEvaluation.model_validate_json(evaluation.model_dump_json()) == evaluation


def test_report_is_self_contained_and_written_atomically(evaluation: SiteEvaluation, report_dir: Path) -> None:
    out = write_site_report(report_dir / "site_report.html", evaluation)
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text), "no external assets"
    assert "@import" not in text and "url(" not in text
    assert "Content-Security-Policy" in text
    assert "hospital-north" in text and "ε = 3.10" in text
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 9
    assert [p.name for p in report_dir.iterdir() if p.name.startswith(".site_report")] == []
    assert oct(out.stat().st_mode & 0o777) == "0o644"


def test_report_renders_in_headless_chromium(evaluation: SiteEvaluation, report_dir: Path) -> None:
    out = write_site_report(report_dir / "site_report.html", evaluation)
    page = rendered_report(out, report_dir / "site_report.png", images=9)
    assert page.title == "OncoFed site report — hospital-north"


def test_report_shows_privacy_spent_round_by_round_against_the_budget(evaluation: SiteEvaluation,
                                                                       tmp_path: Path) -> None:
    rounds = [PrivacyRound(run_id="run-a", server_round=1, epsilon_round=1.40, epsilon_cumulative=1.40),
              PrivacyRound(run_id="run-a", server_round=2, epsilon_round=1.40, epsilon_cumulative=2.05),
              PrivacyRound(run_id="run-b", server_round=1, epsilon_round=0.90, epsilon_cumulative=2.61)]
    privacy = evaluation.privacy.model_copy(update={"epsilon": 2.61, "budget_epsilon": 4.0, "rounds": rounds})
    text = write_site_report(tmp_path / "report.html", evaluation.model_copy(update={"privacy": privacy})).read_text()
    section = text[text.index('<section id="privacy">'):]
    section = section[:section.index("</section>")]
    assert "Privacy spent, round by round" in section and "(ε = 4.00)" in section
    assert [re.sub(r"<[^>]+>", " ", row).split() for row in re.findall(r"<tr><td>run.*?</tr>", section)] == [
        ["run-a", "1", "1.40", "1.40"], ["run-a", "2", "1.40", "2.05"], ["run-b", "1", "0.90", "2.61"]]
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 10  # the spending plot
    without = write_site_report(tmp_path / "plain.html", evaluation).read_text()
    assert '<section id="privacy">' not in without  # no ledger rounds, no section


def test_report_shows_the_audit_log_summary(evaluation: SiteEvaluation, tmp_path: Path) -> None:
    from client.governance.audit import AUDIT_FILE, AuditLog, summarise

    log = AuditLog(tmp_path / AUDIT_FILE)
    log.append({"kind": "instruction", "run": 11, "message_type": "train", "app_sha256": "ab" * 32})
    log.append({"kind": "reply", "run": 11, "message_type": "train", "epsilon": 1.25})
    log.append({"kind": "instruction", "run": 12, "message_type": "train", "app_sha256": "cd" * 32})
    log.append({"kind": "refusal", "run": 12, "message_type": "train", "reason": "site alpha has not approved app"})
    summary = summarise(log.path)
    text = write_site_report(tmp_path / "report.html", evaluation.model_copy(update={"audit": summary})).read_text()
    section = text[text.index('<section id="audit">'):]
    section = section[:section.index("</section>")]
    assert "4 entries" in section and "the chain verifies" in section and summary.head in section
    rows = [re.sub(r"<[^>]+>", " ", row).split() for row in re.findall(r"<tr><td>\d+</td>.*?</tr>", section)]
    assert rows == [["11", "1", "1", "0", "1.25", "abababababababab…"], ["12", "1", "0", "1", "—", "cdcdcdcdcdcdcdcd…"]]
    assert "refused: site alpha has not approved app" in section
    assert '<section id="audit">' not in write_site_report(tmp_path / "plain.html", evaluation).read_text()


def test_a_personalised_model_is_shown_beside_the_consortium_model_under_both_names(evaluation: SiteEvaluation,
                                                                                    tmp_path: Path) -> None:
    rng = np.random.default_rng(41)
    train = contract_only(make_site_table(rng, 350, follow_up_days=1400))
    test = make_site_table(rng, 220, follow_up_days=1400)
    predictions = predictions_from_prognosis(test, rng)
    sharper = predictions.model_copy(update={"response_prob": np.clip(predictions.response_prob * 1.2, 0, 1)})
    both = evaluate_site("hospital-north", train, contract_only(test), predictions, SHAP, evaluation.privacy,
                         evaluation.run, rng, EvaluationSettings(n_bootstrap=20), personalised=sharper)
    assert both.personalised is not None
    assert both.personalised.response.brier.value != pytest.approx(both.model.response.brier.value)
    text = write_site_report(tmp_path / "report.html", both).read_text()
    assert "<td>Consortium model</td>" in text and "<td>Personalised at site</td>" in text
    plain = write_site_report(tmp_path / "plain.html", evaluation).read_text()
    assert "Personalised at site" not in plain and "<td>Federated model</td>" in plain

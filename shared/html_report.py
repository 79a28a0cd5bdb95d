"""Self-contained HTML reports: jinja2 templates, inline CSS and images, nothing fetched from elsewhere.

The page carries a Content-Security-Policy that forbids every network load, so a report opened at a site
cannot reach out even if a value in it were crafted to. Files are written atomically (temp file + rename) so a
reader never sees half a report.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from pydantic import BaseModel, Field

if TYPE_CHECKING:  # an annotation only: shared.metrics loads scikit-learn and scikit-survival
    from shared.metrics import Estimate

TEMPLATES = Path(__file__).parent / "templates"
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class RunInfo(BaseModel):
    """Which run and model a report describes."""

    run_id: str
    model_checkpoint: str = Field(description="checkpoint or model version evaluated")
    rounds_completed: int | None = Field(default=None, description="federated rounds behind the checkpoint")
    evaluated_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    software_version: str | None = None


class PrivacyRound(BaseModel):
    """One training round at a site: ε spent by that round alone and the site's cumulative ε after it."""

    run_id: str
    server_round: int
    epsilon_round: float
    epsilon_cumulative: float


class PrivacySpent(BaseModel):
    """A site's differential-privacy budget spent in training (from its privacy ledger)."""

    epsilon: float | None = Field(description="ε spent; None if trained without differential privacy")
    delta: float | None = None
    accountant: str | None = Field(default=None, description="e.g. 'rdp' or 'prv'")
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    budget_epsilon: float | None = Field(default=None, description="the site's ε budget (target-epsilon)")
    rounds: list[PrivacyRound] = Field(default_factory=list, description="ε per round, oldest first")


def format_estimate(estimate: Estimate | None, digits: int = 2) -> str:
    """'0.74 (0.68–0.79)', or why there is no figure."""
    if estimate is None:
        return "—"
    if estimate.suppressed:
        return "suppressed"
    if estimate.value is None:
        return "not available"
    text = f"{estimate.value:.{digits}f}"
    if estimate.lower is not None and estimate.upper is not None:
        text += f" ({estimate.lower:.{digits}f}–{estimate.upper:.{digits}f})"
    return text


def format_count(value: int | None) -> str:
    return "suppressed" if value is None else f"{value:,}"


def format_days(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} days"


def format_number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def template_dirs() -> list[Path]:
    """This package's templates, then those of any other copy of the package on sys.path.

    Flower's deployment engine runs the app from its FAB, which may carry only .py/.toml/.md/.json/.yaml
    files; the templates then come from the project installed on that machine.
    """
    others = (Path(entry) / "shared" / "templates" for entry in sys.path if entry)
    return [TEMPLATES, *(folder for folder in others if folder != TEMPLATES and folder.is_dir())]


def _environment() -> Environment:
    environment = Environment(loader=FileSystemLoader(template_dirs()), autoescape=select_autoescape(["html", "j2"]),
                              undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(estimate=format_estimate, count=format_count, days=format_days,
                               number=format_number)
    return environment


def render(template_name: str, **context: Any) -> str:
    """Render a template from shared/templates with the report filters and the no-network policy."""
    return _environment().get_template(template_name).render(content_security_policy=CONTENT_SECURITY_POLICY,
                                                             **context)


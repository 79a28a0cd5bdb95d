"""What every plotted benchmark ends with: its JSON, its plot beside it, its table on the console."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.atomic import write_atomically


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """The results file, whole or not at all (a benchmark may rewrite it after every point)."""
    write_atomically(path, json.dumps(payload, indent=2))


def finish(out: Path, payload: dict[str, Any], summary: list[dict[str, Any]],
           plot: Callable[[list[dict[str, Any]], Path], Path], table: Callable[[list[dict[str, Any]]], Table],
           console: Console) -> int:
    """Write the results to `out`, the plot of their summary to `out` with .png, print the table; exit status 0."""
    write_json(out, payload)
    figure_path = plot(summary, out.with_suffix(".png"))
    console.print(table(summary))
    console.print(f"wrote {out} and {figure_path}")
    return 0

"""The coordinator's ServerApp: reads the run configuration and runs the federation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.evaluation_run import run_evaluation_only
from server.federation import References, run_federation
from shared.config import RunConfig, run_directory

# Flower's in-memory Grid (run_simulation's) sleeps `pull_interval` (default 0.1 s) between looks for the sites'
# replies, which rounded every exchange up to the next tenth of a second; a look is a lookup in the same process.
IN_MEMORY_PULL_INTERVAL_S = 0.005


def tune_grid(grid: Grid) -> Grid:
    """The simulation engine's Grid polls for replies every IN_MEMORY_PULL_INTERVAL_S; any other Grid is left as is."""
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    if isinstance(grid, InMemoryGrid):
        grid.pull_interval = IN_MEMORY_PULL_INTERVAL_S
    return grid


def build_server_app(overrides: Mapping[str, Any] | None = None, progress: Callable[[str], None] | None = None,
                     references: References | None = None) -> ServerApp:
    """A ServerApp; `overrides` replace `[tool.flwr.app.config]` values when the project's own command runs it.

    `progress` takes the round and phase lines; the project's own command passes its console and prints the
    run directory itself, so it appears once. Under `flwr run` the lines go to the ServerApp's log. `references`
    (simulations only) adds reference rows to the run's results before they are written.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = RunConfig.from_mapping({**dict(context.run_config), **dict(overrides or {})})
        grid = tune_grid(grid)
        run_dir = run_directory(config, context.run_id)
        if config.evaluate_model:  # a registered model at the sites, no training (server/evaluation_run.py)
            run_evaluation_only(grid, config, run_dir, progress or print)
        else:
            run_federation(grid, config, run_dir, progress or print, references)
        if progress is None:
            print(f"run directory: {run_dir}")

    return app


app = build_server_app()

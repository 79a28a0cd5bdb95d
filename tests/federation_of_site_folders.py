"""A 2-round in-process federation (no Ray) of the site folders in DATA_DIR, without DP, under the app's own data
dictionary (run in a copy of the app whose shared/dictionaries/default.yaml is the sites' consortium's):
`python -m tests.federation_of_site_folders DATA_DIR OUT`. Prints the run's metrics.json test figures as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from client.flower.app import build_client_app
from server.federation import run_federation
from shared.config import RunConfig
from simulations.in_process import InProcessGrid


def main(data_dir: Path, out: Path) -> None:
    torch.set_num_threads(1)
    sites = sorted(p for p in data_dir.iterdir() if (p / "site.toml").is_file())
    config = RunConfig.from_mapping({"data-dir": str(data_dir), "output-dir": str(out), "run-name": "r",
                                     "num-rounds": 2, "dp": False, "bootstrap-samples": 20, "shap-patients": 0})
    run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=len(sites)), config, out / "r",
                   progress=lambda *args, **kwargs: None)
    metrics = json.loads((out / "r" / "metrics.json").read_text())
    print(json.dumps({"test": metrics["test"], "test_missing": metrics["test_missing"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

"""A 2-round in-process federation of three sites under the app's own data dictionary (run in a copy of the app
whose shared/dictionaries/default.yaml is another consortium's): `python -m tests.federation_with_dictionary OUT`.

Prints the run's metrics.json test figures as one JSON line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from client.flower.app import build_client_app
from server.federation import run_federation
from shared.config import RunConfig
from shared.dictionary import default_dictionary
from simulations.in_process import InProcessGrid
from tests.dictionary_cohort import dictionary_export


def main(out: Path) -> None:
    torch.set_num_threads(1)
    dictionary = default_dictionary()
    for index, size in enumerate((260, 220, 180)):
        folder = out / "cohort" / f"site_{index}"
        folder.mkdir(parents=True)
        dictionary_export(dictionary, size, seed=index, site=f"s{index}").to_csv(folder / "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(out / "cohort"), "output-dir": str(out / "runs"), "run-name": "r",
                                     "num-rounds": 2, "survival-interval-days": 180, "bootstrap-samples": 20,
                                     "shap-patients": 5, "shap-samples": 10})
    run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config, out / "runs" / "r",
                   progress=lambda *args, **kwargs: None)
    metrics = json.loads((out / "runs" / "r" / "metrics.json").read_text())
    print(json.dumps({"dictionary": dictionary.name, "test": metrics["test"], "test_missing": metrics["test_missing"],
                      "dictionary_sha256": metrics["provenance"]["dictionary_sha256"]}))


if __name__ == "__main__":
    main(Path(sys.argv[1]))

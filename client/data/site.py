"""Who this site is and what it holds: its data (validated), its deterministic splits, its privacy budget.

Deployment: the SuperNode is started with `--node-config "site-config='/path/site.toml'"` and everything
comes from that file. Simulation: `partition-id` picks one folder of the simulated cohort, and the run
configuration plays the role of every simulated site's configuration.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Context

from client.data.cache import cached_site_table
from client.training.privacy import default_delta
from shared.config import RunConfig, cohort_directory, run_directory
from shared.site_config import SiteConfig

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Site:
    site_id: str
    patients: pd.DataFrame  # validated contract table; never leaves the site
    split: np.ndarray  # "train" / "validation" / "test" per patient
    target_epsilon: float
    target_delta: float  # 0: decided from the training-set size
    min_cell_size: int
    secure_mode: bool
    state_dir: Path  # the site's own disk: privacy ledger, per-patient outputs, its report
    torch_threads: int | None = None  # the site's cap on CPU threads; None = torch's default
    secret_dp_noise: bool = True  # False: DP-SGD's sampling and noise follow the run's seed (rehearsals only)
    # what decides `patients` and `split` (the export's identity and the split settings); None = not known, so
    # nothing derived from the table is memoised (client/data/encoded.py)
    table_key: str | None = None

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / "privacy_ledger.json"

    def delta(self) -> float:
        """The site's δ: its own setting, else 0.1 / n_train (client/training/privacy.py default_delta)."""
        return self.target_delta or default_delta(len(self.part("train")))

    def part(self, name: str) -> pd.DataFrame:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; allowed: {', '.join(SPLITS)}")
        return self.patients.loc[self.split == name].reset_index(drop=True)


def assign_splits(patient_ids: pd.Series, seed: int, validation_fraction: float, test_fraction: float,
                  test_ids: frozenset[str] | None = None) -> np.ndarray:
    """Deterministic, order-independent split: a patient's split depends only on its id and the seed.

    `test_ids`: a fixed test set (site.toml's test_patients); the other patients go to validation with
    probability validation_fraction, else to training."""
    digests = [hashlib.sha256(f"{seed}:{pid}".encode()).digest()[:8] for pid in patient_ids.astype(str)]
    uniform = np.array([int.from_bytes(d, "big") / 2**64 for d in digests])
    if test_ids is not None:
        return np.where(patient_ids.astype(str).isin(test_ids).to_numpy(), "test",
                        np.where(uniform < validation_fraction, "validation", "train"))
    return np.where(uniform < test_fraction, "test",
                    np.where(uniform < test_fraction + validation_fraction, "validation", "train"))


def fixed_test_ids(path: Path, patient_ids: pd.Series) -> frozenset[str]:
    """The patient ids of a site's test_patients file; every one must be a patient of the export."""
    try:
        listed = pd.read_csv(path, dtype=str)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read the site's test_patients file ({error})") from None
    if "patient_id" not in listed.columns:
        raise ValueError(f"{path}: the test_patients file needs a column patient_id (its columns: "
                         f"{', '.join(map(str, listed.columns))})")
    ids = frozenset(listed["patient_id"].dropna().str.strip())
    unknown = sorted(ids - set(patient_ids.astype(str)))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} test patient id(s) are not in the site's export, e.g. "
                         f"{', '.join(unknown[:3])}; list patient ids as they are after the mapping")
    return ids


def simulated_site_table(csv_path: Path, seed: int, validation_fraction: float, test_fraction: float
                         ) -> tuple[pd.DataFrame, np.ndarray]:
    """A simulated site's validated table and splits; a private copy for each caller.

    Flower's Ray engine runs every simulated site's messages in the same few worker processes, and each
    message used to re-read and re-validate its site's CSV. The memo below lives in one worker process,
    is keyed by the file itself (path, size, modification time) and the split settings, so no two sites
    share an entry and an edited file is read again; callers get copies, so nothing one message does to
    its table reaches another.
    """
    status = csv_path.stat()
    patients, split = _read_simulated_site(str(csv_path.resolve()), status.st_size, status.st_mtime_ns, seed,
                                           validation_fraction, test_fraction)
    return patients.copy(), split.copy()


def simulated_table_key(csv_path: Path, seed: int, validation_fraction: float, test_fraction: float) -> str:
    """What decides a simulated site's table and splits: the file (path, size, modification time) and the split
    settings, as simulated_site_table's memo is keyed."""
    status = csv_path.stat()
    return (f"simulated:{csv_path.resolve()}:{status.st_size}:{status.st_mtime_ns}:{seed}:{validation_fraction!r}:"
            f"{test_fraction!r}")


@lru_cache(maxsize=128)
def _read_simulated_site(csv_path: str, size: int, modified_ns: int, seed: int, validation_fraction: float,
                         test_fraction: float) -> tuple[pd.DataFrame, np.ndarray]:
    from client.data.loader import load_contract_csv  # on first use: the readers load pyarrow, DuckDB, SQLAlchemy

    patients = load_contract_csv(csv_path)
    return patients, assign_splits(patients["patient_id"], seed, validation_fraction, test_fraction)


def simulated_site_dirs(config: RunConfig) -> list[Path]:
    root = cohort_directory(config)
    sites = sorted(p for p in root.iterdir() if (p / "patients.csv").is_file()) if root.is_dir() else []
    if not sites:
        raise FileNotFoundError(f"no simulated sites in {root} (expected <site>/patients.csv); "
                                f"generate the default cohort with `oncofed-cohort --out {root}`")
    return sites


def site_from_config(path: Path, config: RunConfig) -> Site:
    """A site described by its own configuration file: data, mapping, budget and a state dir that persists.

    The validated table comes from the site's disk cache (client/data/cache.py) when the export, the site
    configuration and the split settings are those it was built from: a deployed SuperNode runs every
    message in a fresh process, which would otherwise read and validate the export again each time.
    """
    site_config = SiteConfig.from_file(path)

    def load() -> tuple[pd.DataFrame, np.ndarray]:
        from client.data.loader import load_site_frame  # on a cache miss only: readers load DuckDB, SQLAlchemy

        patients = load_site_frame(site_config)
        test_ids = None if site_config.test_patients is None else fixed_test_ids(site_config.test_patients,
                                                                                 patients["patient_id"])
        return patients, assign_splits(patients["patient_id"], config.seed, config.validation_fraction,
                                       config.test_fraction, test_ids)

    patients, split = cached_site_table(site_config, config.seed, config.validation_fraction, config.test_fraction,
                                        load)
    return Site(site_id=site_config.site_id, patients=patients, split=split,
                target_epsilon=site_config.target_epsilon, target_delta=site_config.target_delta or 0.0,
                min_cell_size=site_config.min_cell_size, secure_mode=config.secure_mode,
                state_dir=site_config.state_dir, torch_threads=site_config.resources.torch_threads,
                secret_dp_noise=not site_config.reproducible_dp_noise)


def partition_count_problem(context: Context, config: RunConfig) -> str | None:
    """Why this simulation federates fewer (or more) sites than the cohort holds, or None when it matches.

    Flower's simulation gives each SuperNode a partition; `flwr run` without a federation size starts 2, and
    the other site folders would silently sit out. Each site says so in its first reply.
    """
    if "site-config" in context.node_config or "num-partitions" not in context.node_config:
        return None
    sites = simulated_site_dirs(config)
    supernodes = int(context.node_config["num-partitions"])
    if supernodes == len(sites):
        return None
    left_out = [folder.name for folder in sites[supernodes:]]
    return (f"the simulation has {supernodes} SuperNode(s) but {cohort_directory(config)} holds {len(sites)} "
            f"sites" + (f" ({', '.join(left_out)} would not take part)" if left_out else "")
            + f"; run it with --federation-config \"num-supernodes={len(sites)}\" (flwr run) or "
            f"num_supernodes={len(sites)}")


@dataclass(frozen=True)
class SiteLocation:
    """What a site's configuration says before any data is read: its id, its own folder, the apps it runs."""

    site_id: str
    state_dir: Path
    approved_apps: tuple[str, ...] | None = None  # None: approval not required
    config_file: Path | None = None


def locate_site(context: Context, config: RunConfig) -> SiteLocation:
    """This node's site as `open_site` finds it, from its configuration file only (its data is not opened)."""
    if "site-config" in context.node_config:
        path = Path(str(context.node_config["site-config"]))
    else:
        folder = simulated_site_dirs(config)[int(context.node_config["partition-id"])]
        if not (folder / "site.toml").is_file():
            return SiteLocation(site_id=folder.name,
                                state_dir=run_directory(config, context.run_id) / "sites" / folder.name)
        path = folder / "site.toml"
    site_config = SiteConfig.from_file(path)
    approved = tuple(site_config.approved_apps) if site_config.approved_apps is not None else None
    return SiteLocation(site_id=site_config.site_id, state_dir=site_config.state_dir, approved_apps=approved,
                        config_file=path)


def open_site(context: Context, config: RunConfig) -> Site:
    """This node's site: its site configuration (deployment), or the folder of its partition (simulation).

    A simulated site folder may hold its own site.toml; it then behaves like a deployed site (its budget,
    and a privacy ledger that persists across runs). Otherwise the run configuration plays its part.
    """
    if "site-config" in context.node_config:
        return site_from_config(Path(str(context.node_config["site-config"])), config)
    sites = simulated_site_dirs(config)
    partition = int(context.node_config["partition-id"])
    if partition >= len(sites):
        raise ValueError(f"partition {partition} has no site: {len(sites)} sites in {cohort_directory(config)}; "
                         f"run the simulation with num-supernodes = {len(sites)}")
    folder = sites[partition]
    if (folder / "site.toml").is_file():
        return site_from_config(folder / "site.toml", config)
    patients, split = simulated_site_table(folder / "patients.csv", config.seed, config.validation_fraction,
                                           config.test_fraction)
    return Site(site_id=folder.name, patients=patients, split=split,
                target_epsilon=config.target_epsilon, target_delta=config.target_delta,
                min_cell_size=config.min_cell_size, secure_mode=config.secure_mode,
                state_dir=run_directory(config, context.run_id) / "sites" / folder.name,
                secret_dp_noise=False,  # the researcher's own synthetic sites: seeded, so a run can be reproduced
                table_key=simulated_table_key(folder / "patients.csv", config.seed, config.validation_fraction,
                                              config.test_fraction))

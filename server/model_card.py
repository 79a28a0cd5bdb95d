"""`oncofed-model-card`: a model card (Mitchell et al. 2019) generated from a run directory, as Markdown.

It lives in server/ because it reads only what the coordinator holds: config.json, metrics.json (each site's
shared figures and ε) and the checkpoint (the pooled harmonisation statistics, the round history). No patient
row is needed or read; every count shown is one the sites already shared (small cells suppressed at the site).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.checkpoint import load_checkpoint
from server.consortium_summary import last_training_figures
from server.provenance import ModelProvenance
from shared.config import RunConfig
from shared.contract import MODALITIES
from shared.harmonisation import SUPPRESSED, NormalisationStats
from shared.messages import FIGURES as HEADLINE_FIGURES
from shared.run_result import RunResult
from shared.atomic import write_atomically

FIGURES = tuple((figure.key, figure.label) for figure in HEADLINE_FIGURES)
# A field that stands for each optional modality in the pooled counts (how many training patients had it).
MODALITY_MARKERS = {"pathology": "grade", "imaging": "tumour_size_mm", "genomic": "tmb_mut_per_mb"}


def _network(config: RunConfig) -> str:
    """The network's form in words (run config `network`, `interaction-rank`, `hidden-size`)."""
    interactions = (f"{config.interaction_rank} low-rank regimen × patient interaction products"
                    if config.interaction_rank else "no regimen × patient interactions")
    if config.network == "wide":
        return f"Linear (wide) model over the encoded inputs (shared/model.py, network = wide), {interactions}"
    return (f"Multimodal network (shared/model.py): an encoder per modality ({', '.join(MODALITIES)}), gated-attention "
            f"fusion over the modalities present, a regimen-conditioned trunk (hidden size {config.hidden_size}), beside "
            f"a linear (wide) path over the encoded inputs and {interactions}")


def _estimate(figures: dict[str, float], key: str) -> str:
    if key not in figures:
        return "not reported"
    lower, upper = figures.get(f"{key}-lower"), figures.get(f"{key}-upper")
    interval = f" ({lower:.3f}–{upper:.3f})" if lower is not None and upper is not None else ""
    return f"{figures[key]:.3f}{interval}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _population(stats: NormalisationStats) -> str:
    n = stats.n_patients
    parts = []
    for feature, title in (("cancer_type", "Cancer type"), ("sex", "Sex"), ("race_ethnicity", "Race/ethnicity"),
                           ("stage_group", "Stage group")):
        counts = stats.category_counts.get(feature, {})
        shown = [f"{code} {count:.0f} ({count / n:.0%})" for code, count in counts.items()
                 if count > 0 and code != SUPPRESSED]
        if counts.get(SUPPRESSED, 0) > 0:
            shown.append(f"rarer codes pooled {counts[SUPPRESSED]:.0f}")
        parts.append(f"- {title}: " + ", ".join(shown))
    age = f"- Age: median ≈ {stats.quantile('age_years', 0.5):.0f} years (IQR ≈ {stats.quantile('age_years', 0.25):.0f}–" \
          f"{stats.quantile('age_years', 0.75):.0f}), from the pooled coarse histogram"
    modalities = ["clinical 100%"] + [f"{m} {stats.count.get(field, 0) / n:.0%}" for m, field in MODALITY_MARKERS.items()]
    return "\n".join([*parts, age, "- Modalities measured (share of training patients): " + ", ".join(modalities)])


def _subgroup_rows(test: dict[str, dict[str, float]]) -> list[list[str]]:
    rows = []
    for site in sorted(test):
        keys = sorted({tuple(k.split(":")[1:3]) for k in test[site] if k.startswith("sub:") and k.count(":") == 3})
        for group, level in keys:
            prefix = f"sub:{group}:{level}:"
            n = test[site].get(prefix + "n")
            rows.append([site, f"{group}: {level}", "suppressed" if n is None else f"{n:.0f}",
                         *(_estimate(test[site], prefix + f) for f, _ in FIGURES)])
    return rows


def _range_calibration(path: Path | None) -> str:
    if path is None:
        return ("Not measured for this run. Measure it with `python -m simulations.tumour_board_calibration --run "
                "<run>` where the truth is known (simulated cohorts).")
    results = json.loads(path.read_text(encoding="utf-8"))
    rows = [[name, figure.replace("_", " "), f"{f['coverage']:.1%}", f"{f['median_width']:.3f}",
             f"{f['spearman_width_vs_error']:+.2f}"]
            for name, figures in results["ensembles"].items() for figure in ("response", "median_pfs", "median_os")
            if (f := figures[figure])]
    return (f"Measured on {results['test_patients']} simulated test patients ({results['patient_regimen_pairs']} "
            f"patient × regimen pairs) against the generator's true values ({path.name}); medians on the log-days "
            f"scale:\n\n" + _table(["ensemble", "figure", "truth inside the range", "median width",
                                    "Spearman(width, error)"], rows))


def _provenance(metrics: RunResult, epsilon: dict[str, float]) -> str:
    if metrics.provenance is None:
        return "Not recorded: this run was made before OncoFed recorded provenance."
    record = ModelProvenance.model_validate(metrics.provenance)
    settings = lambda values: ", ".join(f"{k} = {v}" for k, v in values.items())  # noqa: E731
    resumed = (f"\n- Resumed with other app versions: {', '.join(f'`{h}`' for h in record.resumed_with_app_sha256)}"
               if record.resumed_with_app_sha256 else "")
    sites = sorted(set(record.data_fingerprints) | set(epsilon))
    rows = [[s, f"`{record.data_fingerprints[s]}`" if s in record.data_fingerprints else "not sent",
             f"{epsilon[s]:.2f}" if s in epsilon else "—"] for s in sites]
    app = record.app_sha256 or "unknown"
    figures = {dict(FIGURES)[k]: f"{v:.3f}" for k, v in record.validation.items() if k in dict(FIGURES)}
    return f"""- App (FAB hash; `oncofed-app-hash <app folder>` recomputes it): `{app}`{resumed}
- Run configuration hash: `{record.config_sha256}`; data dictionary hash: `{record.dictionary_sha256}`
- Strategy: {settings(record.strategy)}
- Privacy settings of the run configuration: {settings(record.privacy)} (a deployed site trains under the
  budget in its own site.toml; the ε each site spent is in the table below)
- {record.validation_split.title()} figures of this model (weighted over sites, round {record.completed_round}):
  {settings(figures) or "none reported"}

Each site's data fingerprint is a keyed hash (HMAC-SHA256) the site computed of its own export; the key stays at
the site, which can recompute the fingerprint to show which version of its data trained this model.

{_table(["site", "data fingerprint", "ε spent"], rows)}"""


SIMULATED_DATA = "synthetic patients of the simulated consortium (oncofed-simulate)"


def model_card(run_dir: Path, range_calibration: Path | None = None, data_description: str = SIMULATED_DATA) -> str:
    """The card as Markdown, from the run's outputs only."""
    config = RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
    metrics = RunResult.read(run_dir)
    state, _, _ = load_checkpoint(run_dir)
    stats, history = state.normalisation, state.history
    test, missing, epsilon = metrics.test, metrics.test_missing, metrics.epsilon
    train = last_training_figures(history)
    sites = sorted(set(train) | set(test) | set(missing))
    data_rows = [[s, f"{train[s]['num-examples']:.0f}" if s in train else "—",
                  f"{test[s]['num-examples']:.0f}" if s in test and "num-examples" in test[s] else "—"]
                 for s in sites]
    privacy_rows = [[s, f"{epsilon[s]:.2f}" if s in epsilon else ("no DP" if not config.dp else "not reported"),
                     f"{train[s]['delta']:.2e}" if "delta" in train.get(s, {}) else "—",
                     f"{train[s]['noise-multiplier']:.3f}" if "noise-multiplier" in train.get(s, {}) else "—"]
                    for s in sites]
    performance_rows = [[s, *(_estimate(test[s], key) for key, _ in FIGURES)] if s in test
                        else [s, f"not reported: {missing.get(s, 'no figures')}", "", ""] for s in sites]
    performance_rows.append(["**weighted mean**", *(_estimate(metrics.test_mean, k) for k, _ in FIGURES)])
    subgroups = _subgroup_rows(test)
    return f"""# Model card — OncoFed run `{run_dir.name}`

## Model details
- {_network(config)}; outputs the probability of response (RECIST CR/PR)
  and discrete-time PFS and OS survival curves every {config.survival_interval_days} days up to
  {config.survival_horizon_days} days.
- Trained by federated learning (Flower, strategy `{config.strategy}`), {len(history)} of {config.num_rounds}
  rounds completed, {config.local_epochs} local epoch(s) per round, seed {config.seed}.

## Intended use and users
- Users: oncologists and tumour boards at the consortium's sites, with the site's own data
  (`oncofed-tumour-board`), and researchers evaluating federated oncology models.
- Use: decision SUPPORT when comparing candidate regimens for one patient: chance of response, PFS and OS curves,
  the drivers of each prediction, and whether the model was validated on similar patients.
- Not for: choosing a treatment on its own; patients outside the four cancer types and the regimens of the
  vocabulary; causal claims ("regimen A would work better"): the model learned from observational practice.

## Data
Data: {data_description}. Training patients are each site's training split; test patients its held-out test split
(deterministic by patient id and seed; validation {config.validation_fraction:.0%}, test {config.test_fraction:.0%}).

{_table(["site", "training patients", "test patients"], data_rows)}

Pooled training population ({stats.n_patients} patients; counts as shared by sites, codes rarer than the minimum
cell size {config.min_cell_size} pooled):

{_population(stats)}

## Training and privacy
- Differential privacy: {"DP-SGD (Opacus) at every site, per-sample clipping " + str(config.max_grad_norm)
                          + f", target ε = {config.target_epsilon} per site for the whole run (RDP accountant)"
                          if config.dp else "none (trained without DP)"}. The unit of privacy is one patient
  record at one site. Only model updates and suppressed aggregate figures left the sites.

{_table(["site", "ε spent", "δ", "noise multiplier"], privacy_rows)}

## Performance per site (held-out test patients, 95% bootstrap intervals)
{_table(["site", *(name for _, name in FIGURES)], performance_rows)}

## Performance per subgroup
{_table(["site", "subgroup", "n", *(name for _, name in FIGURES)], subgroups) if subgroups else
 "Subgroup figures: not reported by the sites in this run (they appear here when sites share `sub:` figures)."}

## Provenance
{_provenance(metrics, epsilon)}

## Uncertainty shown to the tumour board
The tumour board shows the range over an ensemble of this run's last global models (a snapshot ensemble).
{_range_calibration(range_calibration)}

## Known limitations
- Associational: trained on observational practice, not randomised comparisons; differences between regimens
  can reflect who received them (confounding by indication).
- The range over global models shows instability, not a confidence interval; it does not cover the model's bias.
- DP noise (ε = {config.target_epsilon}) and {len(history)} rounds limit accuracy; small subgroups are suppressed,
  so some patients' subgroups have no validation figure at all.
- Inputs outside the pooled training distribution are flagged by the tumour board, but the model still
  extrapolates there; modalities a site never measured are absent from its training.
- {"The data are synthetic: figures describe the simulator, not real patients." if data_description == SIMULATED_DATA
   else "Figures are from the consortium's own held-out patients; external validity beyond its sites is unknown."}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oncofed-model-card", description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the run directory")
    parser.add_argument("--out", type=Path, help="where to write (default <run>/model_card.md)")
    parser.add_argument("--range-calibration", type=Path,
                        help="JSON from simulations.tumour_board_calibration, to report the ranges' measured coverage")
    parser.add_argument("--data-description", default=SIMULATED_DATA,
                        help="what the sites' data are, for the card's Data section (a deployment names its sources)")
    args = parser.parse_args(argv)
    for required in ("config.json", "metrics.json"):
        if not (args.run / required).is_file():
            print(f"{args.run} has no {required}; pass a finished run directory (runs/<run-name>)", file=sys.stderr)
            return 2
    try:
        text = model_card(args.run, args.range_calibration, args.data_description)
    except FileNotFoundError as error:
        print(str(error), file=sys.stderr)
        return 2
    out = args.out or args.run / "model_card.md"
    write_atomically(out, text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

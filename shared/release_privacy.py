"""DP on what a site releases besides its model (run-config `release-epsilon-share`): the plan both sides share.

With a release share s > 0 each site spends s × its ε on the Gaussian mechanism over the figures it releases
besides the model's weights: its harmonisation statistics and its final (or evaluation-only) test figures. The
coordinator and every site derive the number of such releases from the run configuration alone, so each site
calibrates one noise multiplier for them all and its federated rounds get what the releases leave of its ε.
"""

from __future__ import annotations

from shared.config import RunConfig

HARMONISATION_RELEASE = "harmonisation"
TEST_FIGURES_RELEASE = "test-figures"
EXTERNAL_FIGURES_RELEASE = "evaluation-only-figures"


def releases_under_dp(config: RunConfig) -> bool:
    return config.release_epsilon_share > 0


def planned_releases(config: RunConfig) -> tuple[str, ...]:
    """What a site releases under DP in this run: the harmonisation statistics and the final test figures of a
    federation, or the figures of an evaluation-only run (which has no harmonisation: the model brings its own)."""
    if not releases_under_dp(config):
        return ()
    if config.evaluate_model:
        return (EXTERNAL_FIGURES_RELEASE,)
    return (HARMONISATION_RELEASE, TEST_FIGURES_RELEASE)

"""Training at the site: Opacus DP-SGD, the privacy ledger, the propensity model, recalibration sums."""

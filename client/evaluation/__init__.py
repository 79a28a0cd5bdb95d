"""Evaluation at the site: aggregate figures, federated-validation figures, SHAP, baselines, the site report."""

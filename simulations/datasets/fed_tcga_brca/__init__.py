"""Fed-TCGA-BRCA from FLamby: see PROVENANCE.md and loader.py."""

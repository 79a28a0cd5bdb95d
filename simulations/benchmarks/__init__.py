"""Benchmark scripts: accuracy against published tables, privacy–utility, privacy audits, speed and scale.

Each writes JSON (and a plot where one serves) into simulations/benchmarks/results/ and prints a table.
"""

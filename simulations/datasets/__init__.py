"""Public data sets the benchmarks run on, each with its provenance and licence beside it."""

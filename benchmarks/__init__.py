"""Benchmarks for retrainer (not part of the test suite). Run one with `python -m benchmarks.<name>`,
all of them with `python -m benchmarks.run_all`; see benchmarks/README.md."""

"""Builders of test worlds, shared by the tests and the benchmarks (bench/)."""

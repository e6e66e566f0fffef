"""Flint benchmarks: `make bench` (see bench/RESULTS.md)."""

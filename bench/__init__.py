"""Benchmarks: run from the repository root (see docs/performance.md)."""

"""Benchmarks run by hand against a real PostgreSQL (see docs/benchmarks.md)."""

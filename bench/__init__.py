"""Benchmarks: scripts that print tables (not timed tests); see bench/README.md."""

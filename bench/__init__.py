"""Benchmarks: real workers against the simulator, and the naive script they replace."""

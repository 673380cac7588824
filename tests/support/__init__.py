"""Helpers shared by tests and benchmarks: data sets, small real models, real server processes."""

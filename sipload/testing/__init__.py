"""Test doubles that tests and benchmarks share; production code never imports this package."""

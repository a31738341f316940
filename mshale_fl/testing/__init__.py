"""Helpers for tests and benchmarks that run against the real services (never mocks)."""

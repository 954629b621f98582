"""Real helpers for tests and benchmarks (a loopback HTTP feed server, ...)."""

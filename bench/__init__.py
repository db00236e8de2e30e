"""Benchmarks measured side by side against reference implementations in one process (``make bench``)."""

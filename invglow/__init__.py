"""Placeholder package; the paper is reproduced under its own issue."""

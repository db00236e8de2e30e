"""Faults and bad inputs (issue 16): each test reproduces one, in the real file formats, and checks its clear error."""

"""Diagnostics that any task can use: linear probes of intermediate ports."""

"""Helpers shared by every microarch subpackage (validation, spacing, threads)."""

"""Adapters for other libraries (optional extras)."""

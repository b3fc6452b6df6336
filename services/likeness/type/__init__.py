"""Likeness type package."""

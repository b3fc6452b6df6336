"""Likeness inference package."""

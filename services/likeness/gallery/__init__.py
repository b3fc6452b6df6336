"""Likeness gallery package."""

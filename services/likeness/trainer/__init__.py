"""Likeness trainer package."""

"""Erasure of subjects and tenants (likeness.erasure.eraser)."""

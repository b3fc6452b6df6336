"""The `likeness` command line."""

"""Shared server bootstrap: lifecycle, configuration, logging, metrics and interceptors for every service."""

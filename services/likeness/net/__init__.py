"""Outbound network access to addresses that callers name (webhook receivers, photo URLs): `likeness.net.egress`."""

"""Conversions between protobuf messages and domain values shared by several servicers."""

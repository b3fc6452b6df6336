"""Pieces shared by the client subcommands: the server address, photo discovery, table printing."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from likeness.errors import InvalidArgument, NotFound
from likeness_client import DEFAULT_ADDRESS, LikenessClient

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".gif"}


def add_address_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        default=os.environ.get("LIKENESS_ADDRESS", DEFAULT_ADDRESS),
        help=f"server address (env LIKENESS_ADDRESS, default {DEFAULT_ADDRESS})",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LIKENESS_API_KEY", ""),
        help="API key sent as 'authorization: Bearer ...' (env LIKENESS_API_KEY; needed with --auth api-key)",
    )
    parser.add_argument(
        "--tls-ca",
        default=os.environ.get("LIKENESS_TLS_CA_FILE", ""),
        help="connect with TLS, trusting this PEM CA (env LIKENESS_TLS_CA_FILE); default plaintext",
    )


def connect(args: argparse.Namespace) -> LikenessClient:
    return LikenessClient(
        args.address, api_key=getattr(args, "api_key", "") or None, tls_ca_file=getattr(args, "tls_ca", "") or None
    )


def photo_files(directory: str | Path) -> list[Path]:
    """The photos of a folder, sorted by name; other files (notes, .DS_Store) are ignored."""
    folder = Path(directory)
    if not folder.is_dir():
        raise NotFound(f"photo folder {str(folder)!r} does not exist or is not a folder")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not photos:
        raise InvalidArgument(
            f"no photos in {str(folder)!r}; expected files ending in {', '.join(sorted(PHOTO_SUFFIXES))}",
            field="photos",
        )
    return photos


def print_table(rows: list[list[str]], headers: list[str]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())

"""Placeholder: filled in by the keys/records work."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("dns", help="(not yet implemented)")
    parser.set_defaults(func=lambda args: 2)

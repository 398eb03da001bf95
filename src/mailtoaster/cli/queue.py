"""Placeholder: filled in by the queue work in progress."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Adds nothing yet."""

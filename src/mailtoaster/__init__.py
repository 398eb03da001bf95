"""mailtoaster: a complete mail server for a small organisation."""

__version__ = "0.1.0"

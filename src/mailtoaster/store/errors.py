"""The exceptions of the store: one base per half (directory, Maildir), each with a one-line message."""

from __future__ import annotations


class DirectoryError(Exception):
    """A directory operation was refused or failed; the message says what and why in one line."""


class InvalidAddressError(DirectoryError, ValueError):
    """An address, local part or domain that is not valid RFC 5321 syntax (or not accepted for an account)."""


class NotFoundError(DirectoryError, LookupError):
    """The domain, user or alias named does not exist."""


class AlreadyExistsError(DirectoryError):
    """The domain, user or alias to add exists already."""


class MaildirError(Exception):
    """A Maildir could not be written or read; the message names the path and the reason."""


class FolderNameError(MaildirError, ValueError):
    """A folder name that cannot be stored as a Maildir++ folder (or a directory name that is not one)."""

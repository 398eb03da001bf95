"""The mail store: the directory of domains, users and aliases (SQLite, :mod:`.directory`) and Maildir++
delivery and folders (:mod:`.maildir`), laid out under the data directory as
``directory.sqlite`` and ``mail/<domain>/<local part>/Maildir/`` (see docs/store.md)."""

from mailtoaster.address import MAX_ADDRESS, MAX_LOCAL_PART
from mailtoaster.store.address import (
    SUBADDRESS_SEPARATOR,
    Address,
    normalize_domain,
    parse_account,
    parse_address,
)
from mailtoaster.store.directory import (
    DIRECTORY_FILE,
    MAIL_DIR,
    MAILDIR_NAME,
    MAX_ALIAS_DEPTH,
    ROLE_LOCAL_PARTS,
    SCHEMA_VERSION,
    UNSET,
    Alias,
    Directory,
    Domain,
    Resolution,
    Unset,
    User,
)
from mailtoaster.store.errors import (
    AlreadyExistsError,
    DirectoryError,
    FolderNameError,
    InvalidAddressError,
    MaildirError,
    NotFoundError,
)
from mailtoaster.store.maildir import (
    CHUNK_SIZE,
    JUNK_FOLDER,
    CrlfToLf,
    Maildir,
    deliver_for_user,
    folder_directory_name,
    folder_name_from_directory,
)
from mailtoaster.store.mutf7 import decode_mutf7, encode_mutf7
from mailtoaster.store.subscriptions import Subscriptions

__all__ = [
    "CHUNK_SIZE",
    "DIRECTORY_FILE",
    "JUNK_FOLDER",
    "MAILDIR_NAME",
    "MAIL_DIR",
    "MAX_ADDRESS",
    "MAX_ALIAS_DEPTH",
    "MAX_LOCAL_PART",
    "ROLE_LOCAL_PARTS",
    "SCHEMA_VERSION",
    "SUBADDRESS_SEPARATOR",
    "UNSET",
    "Address",
    "Alias",
    "AlreadyExistsError",
    "CrlfToLf",
    "Directory",
    "DirectoryError",
    "Domain",
    "FolderNameError",
    "InvalidAddressError",
    "Maildir",
    "MaildirError",
    "NotFoundError",
    "Resolution",
    "Subscriptions",
    "Unset",
    "User",
    "decode_mutf7",
    "deliver_for_user",
    "encode_mutf7",
    "folder_directory_name",
    "folder_name_from_directory",
    "normalize_domain",
    "parse_account",
    "parse_address",
]

"""BADMIMETYPE / BADLOADERTYPE on real MIME messages: declared types, executable headers in every
transfer encoding, SPAMCONTROL's base64 prefixes, nesting, limits and broken MIME."""

from __future__ import annotations

import base64
import io
import struct
import zipfile
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.policy import (
    DEFAULT_BAD_MIME_TYPES,
    find_forbidden_attachment,
    is_mime_type,
    parse_bad_mime_types,
)
from mailtoaster.policy.content import MAX_PARTS

# SPAMCONTROL's control/badmimetypes as qmail-toaster ships it, with the entries uncommented.
QMAIL_TOASTER_BADMIMETYPES = """\
TVqQAAMAA
TVpQAAIAA
TVpAALQAc
TVpyAXkAX
TVrmAU4AA
TVrhARwAk
TVoFAQUAA
TVoAAAQAA
TVoIARMAA
TVouARsAA
TVrQAT8AA
TVrvAEQAe
# MyDoom (*.zip)
UEsDBAoAA
# *.zip
UEsDBAkAA
# double Base 64 Windows Executable
VFZxUUFBT
"""


def pe_file() -> bytes:
    """A minimal PE image as linkers write one: DOS header (e_magic MZ, e_lfanew at 0x3c), DOS stub,
    then the PE signature and a COFF header for x86."""
    dos_header = b"MZ" + struct.pack("<13H", 0x90, 3, 0, 4, 0, 0xFFFF, 0, 0xB8, 0, 0, 0, 0x40, 0)
    dos_header = dos_header.ljust(0x3C, b"\0") + struct.pack("<I", 0x80)
    stub = (
        b"\x0e\x1f\xba\x0e\x00\xb4\x09\xcd\x21\xb8\x01\x4c\xcd\x21"
        b"This program cannot be run in DOS mode.\r\r\n$"
    )
    image = (dos_header + stub).ljust(0x80, b"\0") + b"PE\0\0" + struct.pack("<HH", 0x14C, 1)
    return image.ljust(1024, b"\0")


EXE = pe_file()


def message(*attachments: tuple[bytes, str, str, str | None], text: str = "Please see attached.\n") -> bytes:
    return message_object(*attachments, text=text).as_bytes(policy=SMTP)


def message_object(
    *attachments: tuple[bytes, str, str, str | None], text: str = "Please see attached.\n"
) -> EmailMessage:
    """A multipart/mixed message with a text part and each (content, maintype, subtype, filename)."""
    msg = EmailMessage()
    msg["From"] = "sender@example.net"
    msg["To"] = "rcpt@example.com"
    msg["Subject"] = "files"
    msg.set_content(text)
    for content, maintype, subtype, filename in attachments:
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return msg


def check(
    raw: bytes, bad_mime_types: frozenset[str] | tuple[str, ...] = (), loader_types: str = ""
) -> str | None:
    return find_forbidden_attachment(raw, bad_mime_types=bad_mime_types, loader_types=loader_types)


def test_the_fake_pe_is_what_spamcontrol_lists() -> None:
    assert base64.b64encode(EXE).startswith(b"TVqQAAMAA")


# --------------------------------------------------------------------------------- BADLOADERTYPE="M"


def test_windows_executable_is_refused_whatever_its_declared_type() -> None:
    raw = message((EXE, "application", "octet-stream", "invoice.pdf"))
    assert b"Content-Transfer-Encoding: base64" in raw
    assert check(raw, loader_types="M") == 'attachment "invoice.pdf" is a DOS/Windows executable (MZ header)'
    assert check(raw) is None
    assert check(raw, DEFAULT_BAD_MIME_TYPES) is None  # declared octet-stream: only the loader check sees it


def test_harmless_attachments_pass() -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    raw = message((png, "image", "png", "a.png"), (b"%PDF-1.4\n", "application", "pdf", "b.pdf"))
    assert check(raw, DEFAULT_BAD_MIME_TYPES, "M") is None


def test_text_starting_with_mz_is_not_an_executable() -> None:
    raw = message(text="MZ is the DOS signature, named after Mark Zbikowski.\n")
    assert check(raw, loader_types="M") is None
    raw = message((b"MZ" + b"a" * 200, "application", "octet-stream", "notes.bin"))
    assert check(raw, loader_types="M") is None


@pytest.mark.parametrize("encoding", ["quoted-printable", "8bit-binary"])
def test_executables_are_found_in_other_transfer_encodings(encoding: str) -> None:
    if encoding == "quoted-printable":
        body = b"".join(
            b"=%02X" % byte if byte > 126 or byte < 33 or byte == 61 else bytes([byte]) for byte in EXE
        )
        lines = [body[i : i + 72] + b"=" for i in range(0, len(body), 72)]
        part = b"\r\n".join(lines)
    else:
        part = EXE[:300].replace(b"\r", b"").replace(b"\n", b"")
        encoding = "binary"
    raw = (
        b'From: a@example.net\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b'--b1\r\nContent-Type: application/octet-stream; name="x.exe"\r\n'
        b"Content-Transfer-Encoding: " + encoding.encode() + b"\r\n\r\n" + part + b"\r\n--b1--\r\n"
    )
    assert check(raw, loader_types="M") == 'attachment "x.exe" is a DOS/Windows executable (MZ header)'


def test_executable_inside_an_attached_message_is_found() -> None:
    inner = message_object((EXE, "application", "x-msdownload", "setup.exe"))
    outer = EmailMessage()
    outer["From"] = "list@example.net"
    outer.set_content("forwarded")
    outer.add_attachment(inner)
    raw = outer.as_bytes(policy=SMTP)
    assert b"Content-Type: message/rfc822" in raw
    assert check(raw, loader_types="M") == 'attachment "setup.exe" is a DOS/Windows executable (MZ header)'
    assert (
        check(raw, DEFAULT_BAD_MIME_TYPES)
        == 'attachment "setup.exe" has the forbidden type application/x-msdownload'
    )


def test_single_part_message_that_is_an_executable() -> None:
    encoded = base64.encodebytes(EXE).replace(b"\n", b"\r\n")
    raw = (
        b"From: a@example.net\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded
    )
    assert check(raw, loader_types="M") == "MIME part 1 is a DOS/Windows executable (MZ header)"


def test_unknown_loader_letters_are_ignored_here() -> None:
    raw = message((EXE, "application", "octet-stream", "a.bin"))
    assert check(raw, loader_types="Q") is None
    assert check(raw, loader_types="QM") is not None


# ------------------------------------------------------------------------------------- BADMIMETYPE


@pytest.mark.parametrize("declared", sorted(DEFAULT_BAD_MIME_TYPES))
def test_default_list_refuses_declared_executable_types(declared: str) -> None:
    maintype, subtype = declared.split("/")
    raw = message((b"harmless bytes", maintype, subtype, "file.bin"))
    assert check(raw, DEFAULT_BAD_MIME_TYPES) == f'attachment "file.bin" has the forbidden type {declared}'


def test_declared_type_compares_without_case() -> None:
    raw = message((b"x", "application", "X-MSDownload", None))
    assert check(raw, DEFAULT_BAD_MIME_TYPES) == "MIME part 2 has the forbidden type application/x-msdownload"
    assert check(raw, ("Application/X-MSDOWNLOAD",)) is not None


def test_spamcontrol_base64_prefixes_keep_their_meaning() -> None:
    entries = parse_bad_mime_types(QMAIL_TOASTER_BADMIMETYPES)
    assert "TVqQAAMAA" in entries and "UEsDBAoAA" in entries and not any(is_mime_type(e) for e in entries)
    exe = message((EXE, "application", "octet-stream", "a.dat"))
    assert check(exe, entries) == 'attachment "a.dat" starts like a forbidden file (TVqQAAMAA)'

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zipped:
        entry = zipfile.ZipInfo("a.txt")
        entry.extract_version = 10  # "version needed 1.0", as Info-ZIP writes for stored entries
        zipped.writestr(entry, "hello")
    zipped_message = message((archive.getvalue(), "application", "zip", "a.zip"))
    assert check(zipped_message, entries) == 'attachment "a.zip" starts like a forbidden file (UEsDBAoAA)'
    assert check(message((b"plain", "application", "octet-stream", "c.dat")), entries) is None


def test_file_name_in_the_reason_is_safe_for_a_reply() -> None:
    raw = message((EXE, "application", "octet-stream", "evil\u202etxt.exe"))
    reason = check(raw, loader_types="M")
    assert reason is not None
    assert reason.isascii() and "\r" not in reason
    assert reason.startswith('attachment "evil?txt.exe"')


def test_parse_bad_mime_types() -> None:
    text = "# executables\n\nApplication/X-MSDownload\n  TVqQAAMAA  \nTVq/AAMAA\n"
    assert parse_bad_mime_types(text) == frozenset({"application/x-msdownload", "TVqQAAMAA", "TVq/AAMAA"})
    assert is_mime_type("application/x-msdownload") and is_mime_type("x-custom/thing")
    assert not is_mime_type("TVq/AAMAA")
    with pytest.raises(ValueError, match="line 2: 'not a type!'"):
        parse_bad_mime_types("application/zip\nnot a type!\n")


# ------------------------------------------------------------------------------- limits, broken MIME


def test_parts_beyond_the_limit_are_not_examined() -> None:
    harmless = [(b"x", "text", "plain", f"{n}.txt") for n in range(MAX_PARTS + 5)]
    late = message(*harmless, (EXE, "application", "octet-stream", "late.exe"))
    assert check(late, loader_types="M") is None
    early = message((EXE, "application", "octet-stream", "early.exe"), *harmless)
    assert check(early, loader_types="M") is not None


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: application/x-msdownload',
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVq!!!=\r\n==",
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nTVo",
        b"Content-Type: text/plain; charset*=bogus''%FF%FE\r\nContent-Disposition: attachment; "
        b"filename*=x-unknown''%E9.exe\r\n\r\nMZ\x00\x00",
        b'Content-Type: multipart/mixed; boundary="a"\r\n\r\n' * 3000,
    ],
    ids=[
        "empty",
        "binary",
        "empty boundary",
        "truncated",
        "bad base64",
        "short base64",
        "bad charsets",
        "deep",
    ],
)
def test_broken_mime_never_raises(raw: bytes) -> None:
    result = check(raw, DEFAULT_BAD_MIME_TYPES, "M")
    assert result is None or isinstance(result, str)


def test_deeply_nested_executable_is_found_within_the_depth_limit() -> None:
    raw = message((EXE, "application", "octet-stream", "deep.exe"))
    for level in range(10):
        raw = (
            f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n--n{level}\r\n'.encode()
            + raw
            + f"\r\n--n{level}--\r\n".encode()
        )
    assert check(raw, loader_types="M") == 'attachment "deep.exe" is a DOS/Windows executable (MZ header)'


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, 4000), st.binary(max_size=50))
def test_mangled_real_messages_never_raise(junk: bytes, position: int, insert: bytes) -> None:
    raw = message((EXE, "application", "x-msdownload", "a.exe"), (b"x" * 50, "text", "plain", "b.txt"))
    position %= len(raw)
    mangled = raw[:position] + insert + junk + raw[position + len(insert) :]
    result = find_forbidden_attachment(mangled, bad_mime_types=DEFAULT_BAD_MIME_TYPES, loader_types="M")
    assert result is None or isinstance(result, str)

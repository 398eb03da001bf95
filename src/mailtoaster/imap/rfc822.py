"""RFC 822 tokens and address lists, as Dovecot 2.3 reads them (``lib-mail/rfc822-parser.c`` and
``message-address.c``), shared by ENVELOPE/BODYSTRUCTURE (:mod:`.bodystructure`) and SEARCH
(:mod:`.search`). Nothing here raises on any input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNICODE_REPLACEMENT = "\ufffd".encode()
"""What Dovecot writes for a NUL where a caller asks for it (``nul_replacement``)."""

# -- RFC 822 tokens (rfc822-parser.c) -------------------------------------------------------------

# 1: atext; 2: atext and MIME token; 4: atext but a MIME tspecial ("/", "=", "?"). 8-bit counts as atext.
_ATEXT = bytearray(256)
for _byte in b"!#$%&'*+-^_`{|}~":
    _ATEXT[_byte] = 1
for _byte in b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
    _ATEXT[_byte] = 2
for _byte in b"/=?":
    _ATEXT[_byte] = 4
for _byte in range(0x80, 0x100):
    _ATEXT[_byte] = 2
_ATEXT_BYTES = bytes(_ATEXT)
_ATOM_RUN = re.compile(rb"[!#-'*+\-/-9=?A-Z^-~\x80-\xff]+")
_ATOM_OR_DOT_RUN = re.compile(rb"[!#-'*+\-./-9=?A-Z^-~\x80-\xff]+")
_TOKEN_RUN = re.compile(rb"[!#-'*+\-.0-9A-Z^-~\x80-\xff]+")


def is_atext(byte: int) -> bool:
    """Whether ``byte`` (an octet, or -1 for the end of input as :meth:`Tokens.peek` gives it) is atext."""
    return byte >= 0 and _ATEXT_BYTES[byte] != 0


class Tokens:
    """Dovecot's RFC 822 token reader over one header value.

    Methods return 1 when more data follows, 0 at the end (a value may still have been read) and -1
    for invalid input; white space and comments after a token are skipped, before it they are not.
    """

    __slots__ = ("data", "end", "last_comment", "nul_replacement", "pos")

    def __init__(self, data: bytes, last_comment: bytearray | None = None) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment = last_comment
        self.nul_replacement: bytes | None = None

    def peek(self) -> int:
        """The byte at the read position, -1 at the end."""
        return self.data[self.pos] if self.pos < self.end else -1

    def at_end(self) -> bool:
        return self.pos >= self.end

    def skip_comment(self) -> int:
        data, comment = self.data, self.last_comment
        if comment is not None:
            del comment[:]
        level = 1
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            byte = data[self.pos]
            if byte == 0:
                if comment is not None and self.nul_replacement is not None:
                    comment += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif byte == 0x28:
                level += 1
            elif byte == 0x29:
                level -= 1
                if level == 0:
                    if comment is not None:
                        comment += data[start : self.pos]
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            elif byte == 0x0A:
                if comment is not None:
                    stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == 0x0D else self.pos
                    comment += data[start:stop]
                    start = self.pos + 1
            elif byte == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (0x0D, 0x0A, 0):
                    self.pos -= 1
                else:
                    if comment is not None:
                        comment += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1

    def skip_lwsp(self) -> int:
        data = self.data
        while self.pos < self.end:
            byte = data[self.pos]
            if byte in (0x20, 0x09, 0x0D, 0x0A):
                self.pos += 1
                continue
            if byte != 0x28:
                break
            if self.skip_comment() < 0:
                return -1
        return 1 if self.pos < self.end else 0

    def _run(self, pattern: re.Pattern[bytes], out: bytearray) -> int:
        found = pattern.match(self.data, self.pos)
        if found is not None:
            out += found.group()
            self.pos = found.end()
        if self.pos >= self.end:
            return 0
        return self.skip_lwsp()

    def atom(self, out: bytearray) -> int:
        if self.pos >= self.end or not is_atext(self.data[self.pos]):
            return -1
        return self._run(_ATOM_RUN, out)

    def mime_token(self, out: bytearray) -> int:
        return self._run(_TOKEN_RUN, out)

    def atom_or_dot(self, out: bytearray) -> int:
        return self._run(_ATOM_OR_DOT_RUN, out)

    def dot_atom(self, out: bytearray) -> int:
        if self.pos >= self.end or not is_atext(self.data[self.pos]):
            return -1
        while True:
            found = _ATOM_RUN.match(self.data, self.pos)
            if found is None:
                return -1
            out += found.group()
            self.pos = found.end()
            if self.pos >= self.end:
                return 0
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.data[self.pos] != 0x2E:
                return 1
            self.pos += 1
            out.append(0x2E)
            if self.skip_lwsp() <= 0:
                return -1

    def quoted_string(self, out: bytearray) -> int:
        data = self.data
        self.pos += 1
        start = self.pos
        while self.pos < self.end:
            byte = data[self.pos]
            if byte == 0x22:
                out += data[start : self.pos]
                self.pos += 1
                return self.skip_lwsp()
            if byte == 0:
                if self.nul_replacement is not None:
                    out += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif byte == 0x0A:
                stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == 0x0D else self.pos
                out += data[start:stop]
                start = self.pos + 1
            elif byte == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (0x0D, 0x0A, 0):
                    self.pos -= 1
                else:
                    out += data[start : self.pos - 1]
                    start = self.pos
            self.pos += 1
        return -1

    def phrase(self, out: bytearray) -> int:
        if self.pos >= self.end:
            return 0
        if self.data[self.pos] == 0x2E:
            return -1
        while True:
            ret = self.quoted_string(out) if self.data[self.pos] == 0x22 else self.atom_or_dot(out)
            if ret <= 0:
                return ret
            byte = self.data[self.pos]
            if not is_atext(byte) and byte not in (0x22, 0x2E):
                break
            out.append(0x20)
        return self.skip_lwsp()

    def domain_literal(self, out: bytearray) -> int:
        data = self.data
        start = self.pos
        self.pos += 1
        while self.pos < self.end:
            byte = data[self.pos]
            if byte == 0:
                if self.nul_replacement is not None:
                    out += data[start : self.pos] + self.nul_replacement
                    start = self.pos + 1
            elif byte == 0x5B:
                return -1
            elif byte == 0x5D:
                out += data[start : self.pos + 1]
                self.pos += 1
                return self.skip_lwsp()
            elif byte == 0x0A:
                stop = self.pos - 1 if self.pos > start and data[self.pos - 1] == 0x0D else self.pos
                out += data[start:stop]
                start = self.pos + 1
            elif byte == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                if data[self.pos] in (0x0D, 0x0A, 0):
                    out += data[start : self.pos]
                    start = self.pos
                    self.pos -= 1
            self.pos += 1
        return -1

    def domain(self, out: bytearray) -> int:
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1
        if self.data[self.pos] == 0x5B:
            return self.domain_literal(out)
        return self.dot_atom(out)

    def content_type(self, out: bytearray) -> int:
        """``type/subtype``; on errors ``out`` may keep a bare type, as Dovecot's does."""
        if self.skip_lwsp() <= 0:
            return -1
        if self.mime_token(out) <= 0 or not out:
            return -1
        if self.data[self.pos] != 0x2F:
            del out[:]
            return -1
        self.pos += 1
        if self.skip_lwsp() <= 0:
            del out[:]
            return -1
        out.append(0x2F)
        before = len(out)
        ret = self.mime_token(out)
        if ret < 0 or len(out) == before or (self.pos != self.end and self.data[self.pos] != 0x3B):
            del out[:]
            return -1
        return ret

    def content_param(self) -> tuple[int, bytes | None, bytes]:
        """One ``; key=value``: (1, key, value), (0, None, b"") at the end, (-1, key or None, ...)."""
        if self.pos >= self.end:
            return 0, None, b""
        if self.data[self.pos] != 0x3B:
            return -1, None, b""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1, None, b""
        key = bytearray()
        if self.mime_token(key) <= 0:
            return -1, None, b""
        if self.data[self.pos] != 0x3D:
            return -1, None, b""
        self.pos += 1
        value = bytearray()
        ret = self.skip_lwsp()
        if ret <= 0:
            pass
        elif self.data[self.pos] == 0x22:
            ret = self.quoted_string(value)
        elif self.data[self.pos] == 0x3D:
            self.unquoted_run(value)
        else:
            ret = self.mime_token(value)
        return (-1 if ret < 0 else 1), bytes(key), bytes(value)

    def unquoted_run(self, out: bytearray) -> None:
        """A parameter value of broken input like ``name==?utf-8?b?...?=``: up to ``;`` or white space."""
        start = self.pos
        while self.pos < self.end and self.data[self.pos] not in b"; \t\r\n":
            self.pos += 1
        out += self.data[start : self.pos]


# -- addresses (message-address.c) -------------------------------------------------------------


@dataclass(slots=True)
class Address:
    """One ENVELOPE address: group starts have only ``mailbox`` (the group name), group ends nothing."""

    name: bytes | None = None
    route: bytes | None = None
    mailbox: bytes | None = None
    domain: bytes | None = None
    invalid: bool = False


class AddressParser:
    """Dovecot's address-list parser with FILL_MISSING: what is missing becomes ``MISSING_MAILBOX``,
    ``MISSING_DOMAIN`` or ``SYNTAX_ERROR``, so broken headers still give something.

    The options are the ways its callers in Dovecot differ: ``nul_replacement`` for NULs in quoted
    strings, comments and domain literals (None keeps them), ``strict_dots`` for a local part read
    as a strict dot-atom rather than with stray dots allowed, and ``max_addresses``, after which
    no further address is started (None: no limit).
    """

    def __init__(
        self,
        value: bytes,
        *,
        nul_replacement: bytes | None = UNICODE_REPLACEMENT,
        strict_dots: bool = False,
        max_addresses: int | None = None,
    ) -> None:
        self.tokens = Tokens(value, bytearray())
        self.tokens.nul_replacement = nul_replacement
        self.strict_dots = strict_dots
        self.max_addresses = max_addresses
        self.text = bytearray()
        self.current = Address()
        self.addresses: list[Address] = []

    def parse(self) -> list[Address]:
        if self.tokens.skip_lwsp() > 0:
            self._address_list()
        return self.addresses

    def _add(self) -> None:
        self.addresses.append(self.current)
        self.current = Address()

    def _add_fixed(self) -> None:
        current = self.current
        if current.mailbox is None:
            current.mailbox = b"MISSING_MAILBOX"
            current.invalid = True
        if not current.domain:
            current.domain = b"MISSING_DOMAIN"
            current.invalid = True
        self._add()

    def _local_part(self) -> int:
        tokens = self.tokens
        del self.text[:]
        quoted_local = tokens.peek() == 0x22
        if quoted_local:
            ret = tokens.quoted_string(self.text)
        elif self.strict_dots:
            ret = tokens.dot_atom(self.text)
        else:
            ret = self._nonstrict_dot_atom()
        if ret < 0:
            return -1
        self.current.mailbox = bytes(self.text)
        return ret

    def _nonstrict_dot_atom(self) -> int:
        tokens, text = self.tokens, self.text
        ret = -1
        while True:
            while tokens.peek() == 0x2E:
                text.append(0x2E)
                tokens.pos += 1
                if tokens.pos >= tokens.end:
                    return 0
                ret = 1
            if tokens.peek() == 0x40:
                break
            ret = tokens.atom(text)
            if ret <= 0 or tokens.peek() != 0x2E:
                break
        return ret

    def _domain(self) -> int:
        del self.text[:]
        ret = self.tokens.domain(self.text)
        if ret < 0:
            return -1
        self.current.domain = bytes(self.text)
        return ret

    def _domain_list(self) -> int:
        tokens, text = self.tokens, self.text
        del text[:]
        while True:
            if tokens.pos >= tokens.end:
                return 0
            if tokens.peek() != 0x40:
                break
            if text:
                text.append(0x2C)
            text.append(0x40)
            ret = tokens.domain(text)
            if ret <= 0:
                return ret
            while tokens.skip_lwsp() > 0 and tokens.peek() == 0x2C:
                tokens.pos += 1
        self.current.route = bytes(text)
        return 1

    def _angle_addr(self) -> int:
        tokens = self.tokens
        tokens.pos += 1
        if tokens.skip_lwsp() <= 0:
            return -1
        if tokens.peek() == 0x40:
            if self._domain_list() > 0 and tokens.peek() == 0x3A:
                tokens.pos += 1
            else:
                self.current.route = b"INVALID_ROUTE"
                if tokens.pos >= tokens.end:
                    return -1
            if tokens.skip_lwsp() <= 0:
                return -1
        if tokens.peek() != 0x3E:
            if self._local_part() <= 0:
                return -1
            if tokens.peek() == 0x40 and self._domain() <= 0:
                return -1
        if tokens.peek() != 0x3E:
            return -1
        tokens.pos += 1
        return tokens.skip_lwsp()

    def _name_addr(self) -> int:
        tokens = self.tokens
        del self.text[:]
        if tokens.phrase(self.text) <= 0 or tokens.peek() != 0x3C:
            return -1
        self.current.name = bytes(self.text) or None
        if self._angle_addr() < 0:
            self.current.domain = b"SYNTAX_ERROR"
            self.current.invalid = True
        return 1 if tokens.pos < tokens.end else 0

    def _addr_spec(self) -> int:
        tokens, current = self.tokens, self.current
        comment = tokens.last_comment
        assert comment is not None
        del comment[:]
        quoted_local = tokens.peek() == 0x22
        ret = self._local_part()
        domain_ret = -2
        if ret <= 0:
            current.invalid = True
        if ret != 0 and tokens.pos < tokens.end and tokens.peek() == 0x40:
            domain_ret = self._domain()
            if domain_ret <= 0:
                ret = domain_ret
        if comment:
            current.name = bytes(comment)
        elif domain_ret == -2:
            self.text.append(0x20)
            before = len(self.text)
            tokens.phrase(self.text)
            if len(self.text) != before:
                current.mailbox = None
                current.name = bytes(self.text)
            elif not quoted_local:
                current.domain = b""
            current.invalid = True
            ret = -1
        return ret

    def _mailbox(self) -> int:
        start = self.tokens.pos
        ret = self._name_addr()
        if ret < 0:
            self.tokens.pos = start
            ret = self._addr_spec()
            current = self.current
            bare_word = current.mailbox is not None and current.domain is None
            if current.invalid and current.name is None and bare_word:
                current.name, current.mailbox = current.mailbox, None
        if ret < 0:
            self.current.invalid = True
        self._add_fixed()
        return ret

    def _group(self) -> int:
        tokens = self.tokens
        del self.text[:]
        if tokens.phrase(self.text) <= 0 or tokens.peek() != 0x3A:
            return -1
        tokens.pos += 1
        ret = tokens.skip_lwsp()
        if ret <= 0:
            self.current.invalid = True
        self.current.mailbox = bytes(self.text)
        self._add()
        if ret > 0 and tokens.peek() != 0x3B:
            while True:
                self._mailbox()
                if tokens.pos >= tokens.end or tokens.peek() != 0x2C:
                    break
                tokens.pos += 1
                if tokens.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if tokens.pos >= tokens.end or tokens.peek() != 0x3B:
                ret = -1
            else:
                tokens.pos += 1
                ret = tokens.skip_lwsp()
        if ret < 0:
            self.current.invalid = True
        self._add()
        return 0 if ret == 0 else 1

    def _address(self) -> int:
        start = self.tokens.pos
        ret = self._group()
        if ret < 0:
            self.tokens.pos = start
            ret = self._mailbox()
        return ret

    def _address_list(self) -> None:
        tokens, limit = self.tokens, self.max_addresses
        while limit is None or len(self.addresses) < limit:
            if self._address() == 0:
                return
            if tokens.pos >= tokens.end or tokens.peek() != 0x2C:
                return
            tokens.pos += 1
            ret = tokens.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self._add_fixed()
                return


def parse_addresses(value: bytes) -> list[Address]:
    """An address header's value (unfolded) as Dovecot reads it for ENVELOPE."""
    return AddressParser(value).parse()

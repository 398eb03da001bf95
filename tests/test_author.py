"""The Author Domain of a message (RFC 5322 From), as ADSP and DMARC read it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtoaster.auth.author import AuthorAddress, AuthorError, find_authors
from mailtoaster.message import Message


def _message(*from_values: str, extra: str = "") -> Message:
    fields = "".join(f"From: {value}\r\n" for value in from_values)
    return Message.parse(f"{extra}{fields}To: rcpt@example.net\r\nSubject: hi\r\n\r\nbody\r\n".encode())


def test_single_address() -> None:
    """RFC 9989 §3.2.2: the Author Domain is "the domain name of the apparent author as extracted
    from the RFC5322.From header field"."""
    authors = find_authors(_message('"Joe Q. Public" <joe@Example.COM>'))
    assert authors.ok
    assert authors.domain == "example.com"
    assert authors.addresses == (AuthorAddress("joe", "example.com", "Joe Q. Public"),)
    assert authors.addresses[0].address == "joe@example.com"
    assert authors.from_fields == 1


def test_u_label_becomes_a_label() -> None:
    """RFC 9989 §5.3.1: "If the domain is a U-label, the domain MUST be converted to an A-label"."""
    authors = find_authors(_message("user@bücher.example"))
    assert authors.domain == "xn--bcher-kva.example"


def test_several_mailboxes_in_one_domain_are_one_author_domain() -> None:
    """RFC 9989 §5.3.1 counts domains: "If zero or more than one domain is extracted ..."."""
    authors = find_authors(_message("a@example.com, B <b@EXAMPLE.com>"))
    assert authors.ok
    assert len(authors.addresses) == 2
    assert authors.domains == ("example.com",)
    assert authors.domain == "example.com"


def test_several_domains_are_listed_but_no_single_domain() -> None:
    """RFC 5617 §2.3: "If the From header field contains multiple addresses, the message has
    multiple Author Addresses"; each is kept so a caller can evaluate them one by one."""
    authors = find_authors(_message("a@example.com, b@example.org, c@example.com"))
    assert authors.ok
    assert authors.domains == ("example.com", "example.org")
    assert authors.domain is None


def test_no_from_field() -> None:
    authors = find_authors(Message.parse(b"To: x@example.net\r\n\r\nbody\r\n"))
    assert authors.error is AuthorError.NO_FROM_FIELD
    assert authors.addresses == ()
    assert authors.domain is None
    assert "no From field" in authors.reason


def test_multiple_from_fields_keep_every_address() -> None:
    """RFC 5322 §3.6 allows one From field; the addresses of all of them are still reported."""
    authors = find_authors(_message("a@example.com", "b@example.org"))
    assert authors.error is AuthorError.MULTIPLE_FROM_FIELDS
    assert authors.from_fields == 2
    assert authors.domains == ("example.com", "example.org")
    assert authors.domain is None
    assert "2 From fields" in authors.reason


def test_multiple_from_fields_with_the_same_domain_are_still_an_error() -> None:
    authors = find_authors(_message("a@example.com", "a@example.com"))
    assert authors.error is AuthorError.MULTIPLE_FROM_FIELDS
    assert authors.domain is None


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("   ", AuthorError.EMPTY_FROM_FIELD),
        (",,", AuthorError.EMPTY_FROM_FIELD),
        ("undisclosed-recipients:;", AuthorError.MALFORMED),
        ("<joe@example.com", AuthorError.MALFORMED),
        ("joe@", AuthorError.MALFORMED),
        ("joe@example..com", AuthorError.MALFORMED),
        ('"unterminated@example.com', AuthorError.MALFORMED),
        ("joe", AuthorError.NO_DOMAIN),
        ("joe@[192.0.2.1]", AuthorError.NO_DOMAIN),
        ("joe@" + "a" * 64 + ".example", AuthorError.MALFORMED),
    ],
)
def test_unusable_from_fields(value: str, error: AuthorError) -> None:
    authors = find_authors(_message(value))
    assert authors.error is error
    assert authors.domain is None
    assert authors.reason


def test_mailbox_without_domain_next_to_a_good_one() -> None:
    """The good address is kept, but the field is reported as flawed."""
    authors = find_authors(_message("joe, ann@example.com"))
    assert authors.error is AuthorError.NO_DOMAIN
    assert authors.domains == ("example.com",)
    assert authors.domain is None


def test_folded_from_field_and_comments() -> None:
    authors = find_authors(_message("Joe (the boss)\r\n <joe@(comment)example.com>"))
    assert authors.domain == "example.com"


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=80), max_size=3))
def test_never_raises_and_is_consistent(values: list[str]) -> None:
    """Whatever the From fields hold, the result is defined and self-consistent."""
    raw = "".join(f"From: {v}\r\n" for v in values).encode("utf-8", "surrogatepass")
    authors = find_authors(Message.parse(raw + b"\r\nbody\r\n"))
    assert (authors.error is None) == (authors.reason == "")
    for address in authors.addresses:
        assert address.domain == address.domain.lower()
        assert address.domain.isascii()
    if authors.domain is not None:
        assert authors.ok and authors.domains == (authors.domain,)

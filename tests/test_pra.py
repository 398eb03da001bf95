"""RFC 4407 section 2 (Purported Responsible Address), step by step.

RFC 4407 has no machine-readable examples, so each test below is derived from one sentence of its
prose, quoted in the test's docstring.  The quotes are of RFC 4407 §2 unless said otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtoaster.auth.pra import PraError, PraResult, find_pra
from mailtoaster.message import Message

DATA = Path(__file__).parent / "data" / "pra"


def pra(*fields: str | tuple[str, str]) -> PraResult:
    """Run find_pra on a message made of ``fields``: "Name: value" strings or (name, value) pairs."""
    lines = [f if isinstance(f, str) else f"{f[0]}:{f[1]}" for f in fields]
    raw = "".join(line + "\r\n" for line in lines) + "\r\nbody\r\n"
    return find_pra(Message.parse(raw.encode("utf-8")))


def assert_pra(result: PraResult, header: str, address: str) -> None:
    assert result.ok, result.reason
    assert (result.header, result.address) == (header, address)


def assert_no_pra(result: PraResult, error: PraError, header: str | None) -> None:
    assert not result.ok
    assert (result.error, result.header) == (error, header), result.reason
    assert result.address is None and result.reason


# --- Step 1 ---------------------------------------------------------------------------------------


def test_step1_resent_sender_wins_over_everything():
    """Step 1: "Select the first non-empty Resent-Sender header in the message. [...] Otherwise,
    proceed to step 5." """
    result = pra(
        "Resent-From: rf@example.com",
        "Resent-Sender: rs@example.com",
        "Sender: s@example.com",
        "From: f@example.com",
    )
    assert_pra(result, "Resent-Sender", "rs@example.com")


def test_step1_first_resent_sender_is_selected():
    """Step 1: "Select the *first* non-empty Resent-Sender header in the message." """
    result = pra(
        "Resent-Sender: newer@example.com", "Resent-Sender: older@example.com", "From: f@example.com"
    )
    assert_pra(result, "Resent-Sender", "newer@example.com")


def test_step1_empty_resent_sender_is_skipped():
    """Step 1: "Select the first *non-empty* Resent-Sender header in the message." """
    result = pra(("Resent-Sender", "   "), "Resent-Sender: second@example.com", "From: f@example.com")
    assert_pra(result, "Resent-Sender", "second@example.com")


def test_step1_no_resent_sender_continues_with_step2():
    """Step 1: "If no such header is found, continue with step 2." """
    assert_pra(pra("Resent-From: rf@example.com", "From: f@example.com"), "Resent-From", "rf@example.com")


@pytest.mark.parametrize(
    "trace", ["Received: from a by b; Mon, 3 Mar 2025 07:00:00 +0000", "Return-Path: <x@y>"]
)
def test_step1_resent_sender_from_an_older_block_is_ignored(trace: str):
    """Step 1: "If it is preceded by a non-empty Resent-From header and one or more Received or
    Return-Path headers occur after said Resent-From header and before the Resent-Sender header,
    continue with step 2." """
    result = pra(
        "Resent-From: newer@example.com", trace, "Resent-Sender: older@example.com", "From: f@x.example"
    )
    assert_pra(result, "Resent-From", "newer@example.com")


def test_step1_resent_from_in_the_same_block_does_not_override():
    """Step 1: the exception needs trace fields "after said Resent-From header and before the
    Resent-Sender header"; with none in between both are one resent block, and "Otherwise, proceed
    to step 5" selects the Resent-Sender."""
    result = pra(
        "Received: from a by b; Mon, 3 Mar 2025 07:00:00 +0000",
        "Resent-From: boss@example.com",
        "Resent-Date: Mon, 3 Mar 2025 06:59:00 +0000",
        "Resent-Sender: secretary@example.com",
        "Received: from c by a; Mon, 3 Mar 2025 06:00:00 +0000",
        "From: f@example.com",
    )
    assert_pra(result, "Resent-Sender", "secretary@example.com")


def test_step1_trace_field_above_both_does_not_separate_them():
    """Step 1: only Received or Return-Path headers that "occur after said Resent-From header and
    before the Resent-Sender header" count; one above both is not between them."""
    result = pra("Return-Path: <x@y>", "Resent-Sender: rs@example.com", "Resent-From: rf@example.com")
    assert_pra(result, "Resent-Sender", "rs@example.com")


def test_step1_resent_from_after_the_resent_sender_does_not_count():
    """Step 1: the exception is for a Resent-Sender that "is preceded by a non-empty Resent-From
    header"; a Resent-From below it, even past a Received field, does not precede it."""
    result = pra("Resent-Sender: rs@example.com", "Received: from a by b; x", "Resent-From: rf@example.com")
    assert_pra(result, "Resent-Sender", "rs@example.com")


def test_step1_empty_resent_from_does_not_start_a_block():
    """Step 1: the exception needs the Resent-Sender to be "preceded by a *non-empty* Resent-From
    header"."""
    result = pra(("Resent-From", " "), "Received: from a by b; x", "Resent-Sender: rs@example.com")
    assert_pra(result, "Resent-Sender", "rs@example.com")


def test_step1_several_resent_blocks():
    """§2 note: "steps 1 and 2 above extract the Resent-Sender or Resent-From header from the first
    resent block (as defined by section 3.6.6 of [RFC2822]) if any." Three blocks, newest first; the
    newest has no Resent-Sender, so the older blocks' Resent-Senders must not be picked."""
    result = pra(
        "Received: from c by mx; x",
        "Resent-From: third@example.com",
        "Received: from b by c; x",
        "Resent-Sender: second-sender@example.com",
        "Resent-From: second@example.com",
        "Received: from a by b; x",
        "Resent-Sender: first-sender@example.com",
        "Resent-From: first@example.com",
        "Received: from origin by a; x",
        "From: origin@example.com",
    )
    assert_pra(result, "Resent-From", "third@example.com")


def test_step1_newest_block_with_resent_sender():
    """§2 note: the first resent block is used; its Resent-Sender is found before any trace field
    separates it from its own Resent-From."""
    result = pra(
        "Received: from b by mx; x",
        "Resent-Sender: newest-sender@example.com",
        "Resent-From: newest@example.com",
        "Received: from a by b; x",
        "Resent-Sender: old-sender@example.com",
        "Resent-From: old@example.com",
        "From: origin@example.com",
    )
    assert_pra(result, "Resent-Sender", "newest-sender@example.com")


def test_step1_malformed_resent_sender_does_not_fall_back():
    """Step 1 "Otherwise, proceed to step 5" and step 5: "If that header is malformed [...] continue
    with step 6." A bad Resent-Sender is not skipped in favour of the Resent-From or From."""
    result = pra("Resent-Sender: not an address", "Resent-From: rf@example.com", "From: f@example.com")
    assert_no_pra(result, PraError.MALFORMED_MAILBOX, "Resent-Sender")


# --- Step 2 ---------------------------------------------------------------------------------------


def test_step2_resent_from_wins_over_sender_and_from():
    """Step 2: "Select the first non-empty Resent-From header in the message. If a Resent-From
    header is found, proceed to step 5." """
    result = pra("Resent-From: rf@example.com", "Sender: s@example.com", "From: f@example.com")
    assert_pra(result, "Resent-From", "rf@example.com")


def test_step2_first_non_empty_resent_from():
    """Step 2: "Select the first non-empty Resent-From header in the message." """
    result = pra(("Resent-From", ""), "Resent-From: second@example.com", "Resent-From: third@example.com")
    assert_pra(result, "Resent-From", "second@example.com")


def test_step2_resent_from_with_several_mailboxes_is_ill_formed():
    """Step 5: "If that header is malformed (e.g., it appears to contain multiple mailboxes [...]),
    continue with step 6." A Resent-From with two mailboxes does not fall back to the Sender."""
    result = pra("Resent-From: a@example.com, b@example.com", "Sender: s@example.com")
    assert_no_pra(result, PraError.MULTIPLE_MAILBOXES, "Resent-From")


def test_step2_no_resent_from_continues_with_step3():
    """Step 2: "Otherwise, continue with step 3." """
    assert_pra(pra("Sender: s@example.com", "From: f@example.com"), "Sender", "s@example.com")


# --- Step 3 ---------------------------------------------------------------------------------------


def test_step3_single_sender_is_selected():
    """Step 3: "If there is exactly one such header, proceed to step 5." """
    result = pra("From: f@example.com", "Sender: list-bounces@lists.example.org")
    assert_pra(result, "Sender", "list-bounces@lists.example.org")


def test_step3_sender_rescues_a_from_with_several_mailboxes():
    """Step 3 selects the Sender before step 4 ever looks at From, so a From with several authors
    (legal in RFC 2822 only together with a Sender) does not matter."""
    result = pra("From: a@example.com, b@example.com", "Sender: a@example.com")
    assert_pra(result, "Sender", "a@example.com")


def test_step3_multiple_senders_are_ill_formed():
    """Step 3: "If there is more than one such header, proceed to step 6." Step 6: "The message is
    ill-formed, and it is impossible to determine a Purported Responsible Address." """
    result = pra("Sender: a@example.com", "Sender: b@example.com", "From: f@example.com")
    assert_no_pra(result, PraError.MULTIPLE_SENDER_FIELDS, "Sender")


def test_step3_identical_senders_are_still_multiple():
    """Step 3: "If there is more than one such header, proceed to step 6." The count is of headers,
    not of distinct addresses."""
    result = pra("Sender: a@example.com", "Sender: a@example.com")
    assert_no_pra(result, PraError.MULTIPLE_SENDER_FIELDS, "Sender")


def test_step3_only_non_empty_senders_are_counted():
    """Step 3: "Select all the non-empty Sender headers in the message." An empty second Sender is
    "treated as if [it was] not present"."""
    result = pra("Sender: s@example.com", ("Sender", " \t"), "From: f@example.com")
    assert_pra(result, "Sender", "s@example.com")


def test_step3_no_sender_continues_with_step4():
    """Step 3: "If there are no such headers, continue with step 4." """
    assert_pra(pra("From: f@example.com"), "From", "f@example.com")


def test_step3_malformed_sender_does_not_fall_back_to_from():
    """Step 3 "proceed to step 5", step 5 "continue with step 6": a single bad Sender means no PRA,
    even though the From would do."""
    result = pra("Sender: <broken@", "From: f@example.com")
    assert_no_pra(result, PraError.MALFORMED_MAILBOX, "Sender")


# --- Step 4 ---------------------------------------------------------------------------------------


def test_step4_single_from_is_selected():
    """Step 4: "Select all the non-empty From headers in the message. If there is exactly one such
    header, proceed to step 5." """
    assert_pra(pra("From: Ann <ann@example.com>", "To: b@example.net"), "From", "ann@example.com")


def test_step4_multiple_from_headers_are_ill_formed():
    """Step 4: "Otherwise, proceed to step 6." (more than one From header)"""
    result = pra("From: a@example.com", "From: b@example.com")
    assert_no_pra(result, PraError.MULTIPLE_FROM_FIELDS, "From")


def test_step4_no_from_header_is_ill_formed():
    """Step 4: "Otherwise, proceed to step 6." (no From header at all)"""
    assert_no_pra(pra("To: a@example.com", "Subject: hi"), PraError.NO_FROM_FIELD, None)


def test_step4_empty_from_is_as_good_as_none():
    """§2: "Header fields that are otherwise relevant but contain only white space are ignored and
    treated as if they were not present." """
    assert_no_pra(pra(("From", "  "), "Subject: hi"), PraError.NO_FROM_FIELD, None)


def test_step4_empty_second_from_is_not_counted():
    """Step 4: "Select all the non-empty From headers in the message." """
    assert_pra(pra(("From", ""), "From: f@example.com"), "From", "f@example.com")


def test_step4_from_with_several_mailboxes_and_no_sender():
    """Step 5: "If that header is malformed (e.g., it appears to contain multiple mailboxes [...])
    continue with step 6." (a From with two authors and no Sender)"""
    result = pra("From: Ann <ann@example.com>, Bill <bill@example.com>")
    assert_no_pra(result, PraError.MULTIPLE_MAILBOXES, "From")


def test_empty_message_has_no_pra():
    """Step 6: "The message is ill-formed, and it is impossible to determine a Purported
    Responsible Address." (no header fields at all)"""
    assert_no_pra(find_pra(Message.parse(b"")), PraError.NO_FROM_FIELD, None)


# --- "Non-empty" ----------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", ["", " ", "\t", "   \t  ", " \r\n \r\n\t"])
def test_whitespace_only_fields_are_absent(blank: str):
    """§2: 'a header field is "non-empty" if and only if it contains any non-whitespace characters.'
    Folding white space counts as white space."""
    result = pra(("Resent-Sender", blank), ("Resent-From", blank), ("Sender", blank), "From: f@example.com")
    assert_pra(result, "From", "f@example.com")


def test_comment_only_field_is_non_empty_but_malformed():
    """§2: a field is non-empty "if and only if it contains any non-whitespace characters", so a
    comment makes it non-empty; step 5 then finds no mailbox in it ("hopelessly malformed")."""
    result = pra("Sender: (nobody)", "From: f@example.com")
    assert_no_pra(result, PraError.MALFORMED_MAILBOX, "Sender")


# --- Step 5: the selected header must be one well-formed mailbox with a domain -----------------


def test_step5_returns_the_single_mailbox():
    """Step 5: "Otherwise, return that single mailbox as the Purported Responsible Address." """
    result = pra('From: "Doe, John" <john.doe@Example.COM>')
    assert result == PraResult(
        header="From",
        address="john.doe@Example.COM",
        local_part="john.doe",
        domain="Example.COM",
        display_name="Doe, John",
    )


@pytest.mark.parametrize(
    "value",
    [
        "a@example.com, b@example.com",
        "a@example.com,b@example.com,c@example.com",
        "A <a@x.example>, b@x.example",
    ],
)
def test_step5_multiple_mailboxes(value: str):
    """Step 5: "it appears to contain multiple mailboxes" -> step 6."""
    result = pra(f"Sender: {value}", "From: f@example.com")
    assert_no_pra(result, PraError.MULTIPLE_MAILBOXES, "Sender")


@pytest.mark.parametrize(
    "value",
    [
        "John Doe",  # a phrase, not an address
        "<john@example.com",  # unclosed angle address
        "john@example.com>",
        "John <john@example.com> trailing",
        "<>",  # the null reverse path is no mailbox
        "@example.com",  # no local part
        "john@",  # '@' and nothing after it
        "john@example.com.",  # trailing dot
        "john@example..com",
        "john..doe@example.com",
        ".john@example.com",
        "john@exa mple.com",  # two atoms without a dot
        '"unterminated@example.com',
        "john@example.com (unterminated comment",
        "john@example.com)",
        "john@[192.0.2.1",
        "jo\\hn@example.com",  # a backslash outside quotes
        "john@example.com;",
        "Team: john@example.com;",  # group syntax
        "undisclosed-recipients:;",
        "a@b@example.com",
        "<<john@example.com>>",
        "john@" + "a" * 64 + ".example",  # label longer than 63 octets
        "john@" + ".".join(["abcdefghi"] * 26),  # name longer than 253 octets
        "john@\ufffd.example",  # undecodable octets
        "jo\ufffdhn@example.com",
        "john@exa\u0085mple.com",  # C1 control character
        '"jo\x01hn"@example.com',  # control character in a quoted local part
    ],
)
def test_step5_hopelessly_malformed(value: str):
    """Step 5: "the single mailbox is hopelessly malformed" -> step 6."""
    assert_no_pra(pra(f"From: {value}"), PraError.MALFORMED_MAILBOX, "From")


@pytest.mark.parametrize(
    "value", ["root", "<root>", "Root User <root>", "root@[192.0.2.1]", "r@[IPv6:2001:db8::1]"]
)
def test_step5_mailbox_without_domain_name(value: str):
    """Step 5: "the single mailbox does not contain a domain name" -> step 6. An address literal
    is an address, not a domain name."""
    assert_no_pra(pra(f"From: {value}"), PraError.NO_DOMAIN, "From")


def test_step6_reason_cites_the_step():
    """Step 6: "it is impossible to determine a Purported Responsible Address" -- and the reason
    says which step decided so."""
    assert "step 3" in pra("Sender: a@x.example", "Sender: b@x.example").reason
    assert "step 5" in pra("From: a@x.example, b@x.example").reason


# --- Address syntax (RFC 2822 §3.4, obsolete forms of §4.4, RFC 6532) -----------------------------


@pytest.mark.parametrize(
    ("value", "address", "display_name"),
    [
        ("john@example.com", "john@example.com", ""),
        ("<john@example.com>", "john@example.com", ""),
        ("John Doe <john@example.com>", "john@example.com", "John Doe"),
        ('"Doe, John" <john@example.com>', "john@example.com", "Doe, John"),
        ('"John \\"JD\\" Doe" <john@example.com>', "john@example.com", 'John "JD" Doe'),
        ("john@example.com (John Doe)", "john@example.com", ""),
        ("(a (nested) comment) John <john(x)@(y)example.com(z)>", "john@example.com", "John"),
        ("John Q. Public <jqp@example.com>", "jqp@example.com", "John Q. Public"),  # obs-phrase
        ("john . doe @ example . com", "john.doe@example.com", ""),  # obs-local-part, obs-domain
        ("<@relay.example,@hop.example:john@example.com>", "john@example.com", ""),  # obs-route
        (", ,john@example.com,", "john@example.com", ""),  # obs-mbox-list
        ('"john doe"@example.com', '"john doe"@example.com', ""),
        ('"john.doe"@example.com', "john.doe@example.com", ""),  # quoting a dot-atom changes nothing
        ('"john".doe@example.com', "john.doe@example.com", ""),
        ('"a\\"b"@example.com', '"a\\"b"@example.com', ""),
        ('""@example.com', '""@example.com', ""),
        ("user+tag@sub.example.co.uk", "user+tag@sub.example.co.uk", ""),
        ("{weird}!#$%&'*=?^_`|~-@example.com", "{weird}!#$%&'*=?^_`|~-@example.com", ""),
        ("John<john@example.com>", "john@example.com", "John"),
    ],
)
def test_address_forms(value: str, address: str, display_name: str):
    """Step 5: "return that single mailbox" -- in every form RFC 2822 lets a mailbox take."""
    result = pra(f"From: {value}")
    assert_pra(result, "From", address)
    assert result.display_name == display_name
    assert result.address == f"{result.local_part}@{result.domain}"


def test_encoded_words_in_display_name_are_decoded():
    """RFC 2047 §6.2: white space between adjacent encoded-words is not displayed."""
    result = pra("From: =?UTF-8?Q?J=C3=B6rg?= =?utf-8?B?IE3DvGxsZXI=?= <jm@example.com>")
    assert_pra(result, "From", "jm@example.com")
    assert result.display_name == "Jörg Müller"


def test_undecodable_encoded_word_is_kept_verbatim():
    """An unknown charset is no reason to lose the PRA: the display name is informational."""
    result = pra("From: =?x-unknown?Q?abc?= <a@example.com>")
    assert_pra(result, "From", "a@example.com")
    assert result.display_name == "=?x-unknown?Q?abc?="


def test_encoded_word_never_becomes_an_address():
    """RFC 2047 §5: an encoded-word must not appear in an addr-spec; a header whose only content is
    an encoded "<a@b.example>" has no domain, it is not decoded into one."""
    assert_no_pra(pra("From: =?utf-8?b?PGFAYi5leGFtcGxlPg==?="), PraError.NO_DOMAIN, "From")


def test_internationalised_domain_becomes_a_labels():
    """RFC 6532 allows UTF-8 addresses; the domain is given as DNS will be asked for it."""
    result = pra("From: Jörg <jörg@bücher.example>")
    assert_pra(result, "From", "jörg@xn--bcher-kva.example")
    assert (result.local_part, result.domain) == ("jörg", "xn--bcher-kva.example")


def test_invalid_internationalised_label_is_malformed():
    """Step 5: "hopelessly malformed" -- a label IDNA cannot encode cannot be looked up."""
    assert_no_pra(pra("From: a@\u2028bad.example"), PraError.MALFORMED_MAILBOX, "From")


def test_non_utf8_octets_in_the_address_are_malformed():
    """Step 5: "hopelessly malformed" -- an address with octets that are not UTF-8."""
    raw = b"From: j\xf6rg@example.com\r\n\r\n"
    assert_no_pra(find_pra(Message.parse(raw)), PraError.MALFORMED_MAILBOX, "From")


def test_non_utf8_octets_in_the_display_name_are_tolerated():
    """Only the mailbox matters; a Latin-1 display name is not "hopelessly" malformed."""
    raw = b"From: J\xf6rg <joerg@example.com>\r\n\r\n"
    assert_pra(find_pra(Message.parse(raw)), "From", "joerg@example.com")


# --- Header names and folding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resent-sender", "Resent-Sender"),
        ("RESENT-FROM", "Resent-From"),
        ("sEnDeR", "Sender"),
        ("FROM", "From"),
    ],
)
def test_header_names_are_case_insensitive(name: str, expected: str):
    """RFC 2822 §1.2.2: "Header field names are not case sensitive." The result spells the field
    canonically."""
    assert_pra(pra(f"{name}: x@example.com"), expected, "x@example.com")


def test_odd_case_fields_count_together():
    """Step 3: "Select all the non-empty Sender headers" -- whatever their case."""
    result = pra("SENDER: a@example.com", "sender: b@example.com")
    assert_no_pra(result, PraError.MULTIPLE_SENDER_FIELDS, "Sender")


def test_odd_case_trace_fields_separate_blocks():
    """Step 1: "one or more Received or Return-Path headers" -- in any case."""
    result = pra("Resent-From: rf@example.com", "RECEIVED: from a by b; x", "resent-SENDER: rs@example.com")
    assert_pra(result, "Resent-From", "rf@example.com")


def test_similar_field_names_do_not_count():
    """Only the four named fields take part: X-Sender, Resent-To, Reply-To and friends do not."""
    result = pra(
        "X-Sender: x@example.com",
        "Resent-To: rt@example.com",
        "Reply-To: r@example.com",
        "X-Original-From: o@example.com",
        "From: f@example.com",
    )
    assert_pra(result, "From", "f@example.com")


def test_folded_header():
    """RFC 2822 §2.2.3: unfolding removes the CRLF before the white space, so a From folded in the
    middle of its address is the same From."""
    result = pra("From: John\r\n Doe\r\n\t<john@\r\n example.com>")
    assert_pra(result, "From", "john@example.com")
    assert result.display_name == "John Doe"


def test_folded_resent_sender_with_bare_lf():
    """Bare-LF line endings are folded just the same."""
    raw = b"Resent-Sender:\n  rs@example.com\nFrom: f@example.com\n\n"
    assert_pra(find_pra(Message.parse(raw)), "Resent-Sender", "rs@example.com")


# --- Result type ----------------------------------------------------------------------------------


def test_result_is_frozen_and_consistent():
    result = pra("From: f@example.com")
    with pytest.raises(AttributeError):
        result.address = "other@example.com"  # type: ignore[misc]
    with pytest.raises(ValueError, match="carries no address"):
        PraResult("From", "a@b", "a", "b", error=PraError.NO_DOMAIN)
    with pytest.raises(ValueError, match="needs"):
        PraResult("From")


# --- Sample messages ------------------------------------------------------------------------------


def _expectation(message: Message) -> dict[str, str]:
    field = message.get("X-Pra-Expect")
    assert field is not None
    return dict(part.strip().split("=", 1) for part in field.value.split(";"))


@pytest.mark.parametrize("path", sorted(DATA.glob("*.eml")), ids=lambda p: p.stem)
def test_sample_messages(path: Path):
    """Whole messages as MTAs write them; each names its expected outcome in X-Pra-Expect."""
    message = Message.parse(path.read_bytes())
    expect = _expectation(message)
    result = find_pra(message)
    assert result.header == expect.get("header")
    if "error" in expect:
        assert result.error is not None and result.error.value == expect["error"], result.reason
    else:
        assert result.ok, result.reason
        assert result.address == expect["address"]


# --- Fuzzing --------------------------------------------------------------------------------------


def _check_invariants(result: PraResult) -> None:
    assert isinstance(result, PraResult)
    if result.ok:
        assert result.header in ("Resent-Sender", "Resent-From", "Sender", "From")
        assert result.local_part is not None and result.domain is not None
        assert result.address == f"{result.local_part}@{result.domain}"
        assert result.domain.isascii() and result.domain
        assert not result.reason
    else:
        assert result.address is None and result.reason.startswith("RFC 4407 step")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_fuzz_any_bytes_give_a_result(raw: bytes):
    """Whatever arrives, find_pra answers with a PraResult and never raises."""
    _check_invariants(find_pra(Message.parse(raw)))


_FIELD_NAMES = ["Resent-Sender", "Resent-From", "Sender", "From", "Received", "Return-Path", "To", "X-Sender"]
_VALID = ["a@example.com", "Bob <bob@example.org>", '"x y"@example.net (c)', "<@r.example:z@example.com>"]
_INVALID = ["a@example.com, b@example.com", "no domain here", "<broken@", "(comment only)", "g: a@b.example;"]
_BLANK = ["", " ", "\t"]
_ADDRESS_CHARS = st.characters(blacklist_categories=("Cs", "Cc"))


@st.composite
def _fields(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(_FIELD_NAMES))
    name = draw(st.sampled_from([name, name.lower(), name.upper()]))
    value = draw(
        st.one_of(
            st.sampled_from(_VALID + _INVALID + _BLANK),
            st.text(_ADDRESS_CHARS, max_size=40),
            st.text(st.sampled_from('a@.<>,:;()"\\[] \t'), max_size=20),
        )
    )
    if draw(st.booleans()):
        value = value.replace(" ", "\r\n ", 1)
    return name, value


def _oracle(fields: Sequence[tuple[str, str]]) -> tuple[str | None, PraError | None]:
    """RFC 4407 steps 1-4 transcribed literally: the field step 5 reads, or the step-6 error."""
    canon = [(name.title(), value) for name, value in fields]

    def non_empty(wanted: str) -> list[int]:
        return [i for i, (n, v) in enumerate(canon) if n == wanted and v.strip(" \t\r\n")]

    resent_senders, resent_froms = non_empty("Resent-Sender"), non_empty("Resent-From")
    if resent_senders:
        rs = resent_senders[0]
        older_block = any(
            any(canon[k][0] in ("Received", "Return-Path") for k in range(rf + 1, rs))
            for rf in resent_froms
            if rf < rs
        )
        if not older_block:
            return "Resent-Sender", None
    if resent_froms:
        return "Resent-From", None
    senders, froms = non_empty("Sender"), non_empty("From")
    if len(senders) > 1:
        return "Sender", PraError.MULTIPLE_SENDER_FIELDS
    if senders:
        return "Sender", None
    if len(froms) == 1:
        return "From", None
    return (None, PraError.NO_FROM_FIELD) if not froms else ("From", PraError.MULTIPLE_FROM_FIELDS)


@settings(max_examples=500)
@given(st.lists(_fields(), max_size=12))
def test_fuzz_header_sets_follow_the_steps(fields: list[tuple[str, str]]):
    """Random header sets: the field chosen (or the selection error) is what steps 1-4 say, and a
    known-good value in the chosen field yields exactly that mailbox."""
    result = pra(*fields)
    _check_invariants(result)
    header, selection_error = _oracle(fields)
    assert result.header == header
    if selection_error is not None:
        assert result.error == selection_error
        return
    assert result.error not in (
        PraError.MULTIPLE_SENDER_FIELDS,
        PraError.MULTIPLE_FROM_FIELDS,
        PraError.NO_FROM_FIELD,
    )
    chosen = next(v for n, v in fields if n.title() == header and v.strip(" \t\r\n"))
    if chosen.replace("\r\n", "") in _VALID:
        assert result.ok, result.reason
    if chosen.replace("\r\n", "") in _INVALID:
        assert not result.ok


_ATOM = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,12}", fullmatch=True)
_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)


@given(
    local=st.lists(_ATOM, min_size=1, max_size=3).map(".".join),
    domain=st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
    name=st.text(st.sampled_from("abc XYZ"), max_size=10),
    style=st.sampled_from(["{a}", "<{a}>", '"{n}" <{a}>', "{a} ({n})", " ( {n} ) <{a}> "]),
)
def test_fuzz_well_formed_mailboxes_are_found(local: str, domain: str, name: str, style: str):
    """Any dot-atom mailbox, in any of the usual dresses, comes back exactly."""
    result = pra("From: " + style.format(a=f"{local}@{domain}", n=name))
    assert_pra(result, "From", f"{local}@{domain}")
    assert (result.local_part, result.domain) == (local, domain)

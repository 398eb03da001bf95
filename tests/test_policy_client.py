"""ClientPolicy from rules, SPFBEHAVIOR levels, DKVERIFY letters, DKIM verdicts as DomainKeys statuses
(on really signed messages) and DKSIGN's key files."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailtoaster.auth.dkim import DkimSigner, DkimVerdict, DkimVerifyOptions, sign_message, verify_dkim
from mailtoaster.auth.domainkeys import DkStatus
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.keys import KeyType, create_key
from mailtoaster.message import Message
from mailtoaster.policy import (
    ACCEPT,
    ClientPolicy,
    Decision,
    PolicyTable,
    RulesError,
    SpfBehavior,
    client_policy,
    dkim_status,
    dksign_key,
    dkverify_decision,
    parse_rules,
    spf_decision,
)
from tests import dkimcorpus, peers

TOASTER = (
    '127.:allow,RELAYCLIENT="",DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
    '69.36.226.12:allow,RELAYCLIENT="",DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
    ':allow,BADMIMETYPE="",BADLOADERTYPE="M",CHKUSER_RCPTLIMIT="50",CHKUSER_WRONGRCPTLIMIT="3",'
    'QMAILQUEUE="/var/qmail/bin/simscan",DKVERIFY="DEGIJKfh",DKQUEUE="/var/qmail/bin/qmail-queue.orig",'
    'DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
)


def policy_of(line: str, default_spf: SpfBehavior = SpfBehavior.HEADERS_ONLY) -> ClientPolicy:
    return client_policy(parse_rules(line + "\n", "tcp.smtp").rules[0], default_spf=default_spf)


# ------------------------------------------------------------------------------------------ ClientPolicy


def test_toaster_relay_line() -> None:
    table = PolicyTable(parse_rules(TOASTER, "tcp.smtp"))
    policy = table.policy_for("127.0.0.1")
    assert policy.allowed and policy.relay
    assert policy.dksign == "/var/qmail/control/domainkeys/%/default"
    assert (policy.dkverify, policy.rcpt_limit, policy.wrong_rcpt_limit) == (None, None, None)
    assert (policy.bad_mime_types, policy.bad_loader_types) == (False, "")
    assert policy.ignored == ()
    assert policy.rule is not None and policy.rule.line == 1
    assert not policy.checks_spf  # qmail-spf does not check relay clients


def test_toaster_default_line() -> None:
    policy = PolicyTable(parse_rules(TOASTER, "tcp.smtp")).policy_for("203.0.113.5")
    assert policy.allowed and not policy.relay
    assert (policy.rcpt_limit, policy.wrong_rcpt_limit) == (50, 3)
    assert policy.bad_mime_types
    assert policy.bad_loader_types == "M"
    assert policy.dkverify == "DEGIJKfh"
    assert policy.spf_behavior is SpfBehavior.HEADERS_ONLY
    assert policy.ignored == ("QMAILQUEUE", "DKQUEUE")
    assert policy.env["QMAILQUEUE"] == "/var/qmail/bin/simscan"
    assert policy.checks_spf


def test_no_rule_allows_everything_with_the_default_spf_level() -> None:
    policy = client_policy(None, default_spf=SpfBehavior.REJECT_FAIL)
    assert policy == ClientPolicy(spf_behavior=SpfBehavior.REJECT_FAIL)
    assert policy.allowed and not policy.relay and policy.rule is None and dict(policy.env) == {}
    table = PolicyTable(parse_rules("127.:allow\n"), default_spf=SpfBehavior.REJECT_SOFTFAIL)
    assert table.policy_for("10.0.0.1").spf_behavior is SpfBehavior.REJECT_SOFTFAIL
    assert table.policy_for("10.0.0.1").rule is None


def test_deny_rule() -> None:
    policy = PolicyTable(parse_rules("10.:deny\n")).policy_for("10.1.1.1", "x.example.com")
    assert not policy.allowed


def test_spfbehavior_variable_overrides_the_default() -> None:
    assert policy_of(':allow,SPFBEHAVIOR="3"', SpfBehavior.OFF).spf_behavior is SpfBehavior.REJECT_FAIL
    assert policy_of(":allow", SpfBehavior.REJECT_NOT_PASS).spf_behavior is SpfBehavior.REJECT_NOT_PASS
    assert not policy_of(':allow,SPFBEHAVIOR="0"').checks_spf


def test_zero_limits_mean_no_limit() -> None:
    policy = policy_of(':allow,CHKUSER_RCPTLIMIT="0",CHKUSER_WRONGRCPTLIMIT="007"')
    assert (policy.rcpt_limit, policy.wrong_rcpt_limit) == (None, 7)


def test_spamcontrol_minus_turns_checks_off() -> None:
    policy = policy_of(':allow,BADMIMETYPE="-",BADLOADERTYPE="-"')
    assert (policy.bad_mime_types, policy.bad_loader_types) == (False, "")
    assert policy_of(':allow,BADMIMETYPE="!"').bad_mime_types
    assert policy_of(':allow,BADLOADERTYPE="MM"').bad_loader_types == "M"


def test_unknown_variables_and_a_relayclient_suffix_are_listed_as_ignored() -> None:
    policy = policy_of(':allow,RBLSMTPD="",RELAYCLIENT="@fix.me",NOP0FCHECK="1"')
    assert policy.relay
    assert policy.ignored == ("RELAYCLIENT", "RBLSMTPD", "NOP0FCHECK")
    assert policy_of(':allow,RELAYCLIENT=""').ignored == ()


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('CHKUSER_RCPTLIMIT="fifty"', 'CHKUSER_RCPTLIMIT="fifty" is not a whole number'),
        ('CHKUSER_RCPTLIMIT=""', "is not a whole number"),
        ('CHKUSER_WRONGRCPTLIMIT="-1"', "is not a whole number"),
        ('CHKUSER_RCPTLIMIT="9999999999"', "is not a whole number"),
        ('SPFBEHAVIOR="7"', "not a level from 0 to 6"),
        ('SPFBEHAVIOR="x"', "not a level from 0 to 6"),
        ('DKVERIFY="DEGZfh"', "'Z' not a status letter"),
        ('DKVERIFY="D E"', "' ' not a status letter"),
        ('BADLOADERTYPE="Q"', "unknown letter 'Q'; known: M"),
        ('DKSIGN=""', "names no key file"),
        ('DKSIGN="keys/%/default"', "an absolute path"),
        ('DKSIGN="/etc/keys/"', "names no key file"),
        ('DKSIGN="/etc/keys/bad_selector!"', "is not a DKIM selector"),
    ],
)
def test_invalid_values_are_rules_errors_at_load_time(setting: str, message: str) -> None:
    text = f'127.:allow,RELAYCLIENT=""\n:allow,{setting}\n'
    with pytest.raises(RulesError, match=r"^tcp\.smtp line 2: ") as error:
        PolicyTable(parse_rules(text, "tcp.smtp"))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "dksign",
    [
        "/var/qmail/control/domainkeys/%/default",
        "control/domainkeys/%/private",
        "/etc/dkim/%.key",
        "/etc/dkim/selector1",
    ],
)
def test_valid_dksign_forms(dksign: str) -> None:
    assert policy_of(f':allow,DKSIGN="{dksign}"').dksign == dksign


# ---------------------------------------------------------------------------------------------- SPF

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
# qmail-spf's table: a = accept, t = 451, r = 550; one row per SPFBEHAVIOR level, columns as RESULTS.
SPF_TABLE = {
    SpfBehavior.OFF: "aaaaaaa",
    SpfBehavior.HEADERS_ONLY: "aaaaaaa",
    SpfBehavior.DEFER_TEMPERROR: "aaaaata",
    SpfBehavior.REJECT_FAIL: "araaata",
    SpfBehavior.REJECT_SOFTFAIL: "arraata",
    SpfBehavior.REJECT_NEUTRAL: "arrrata",
    SpfBehavior.REJECT_NOT_PASS: "arrrrtr",
}
ACTIONS = {"a": "accept", "t": "tempfail", "r": "reject"}


@pytest.mark.parametrize("level", list(SpfBehavior))
@pytest.mark.parametrize("result", RESULTS)
def test_spf_levels_times_results(level: SpfBehavior, result: str) -> None:
    decision = spf_decision(level, result)
    assert decision.action == ACTIONS[SPF_TABLE[level][RESULTS.index(result)]]
    if decision.action == "accept":
        assert decision == ACCEPT
    elif result == "temperror":
        assert (decision.code, decision.enhanced) == (451, "4.7.24")
    elif result == "permerror":
        assert (decision.code, decision.enhanced) == (550, "5.7.24")
    else:
        assert (decision.code, decision.enhanced) == (550, "5.7.23")
        assert decision.text.startswith(f"SPF {result}:")


def test_spf_levels_are_qmail_spf_numbers() -> None:
    assert [int(level) for level in SpfBehavior] == list(range(7))
    assert spf_decision(3, "fail").action == "reject"


def test_spf_explanation_is_in_the_reply_and_made_safe() -> None:
    decision = spf_decision(SpfBehavior.REJECT_FAIL, "fail", "See http://example.com/why")
    assert decision.reply == (
        "550 5.7.23 SPF fail: the sending host is not authorized to send mail for this domain: "
        "See http://example.com/why"
    )
    hostile = spf_decision(SpfBehavior.REJECT_FAIL, "fail", "x\r\n250 ok\r\nDATA" + "y" * 1000 + "é")
    assert "\r" not in hostile.text and "\n" not in hostile.text
    assert len(hostile.reply) <= 320
    assert hostile.text.isascii()


def test_spf_result_keywords() -> None:
    assert spf_decision(SpfBehavior.REJECT_NOT_PASS, "PermError").enhanced == "5.7.24"
    assert spf_decision(SpfBehavior.REJECT_NOT_PASS, "unknown").enhanced == "5.7.24"  # qmail-spf's name
    assert spf_decision(SpfBehavior.DEFER_TEMPERROR, "error").code == 451
    with pytest.raises(ValueError, match="not an SPF result"):
        spf_decision(SpfBehavior.REJECT_FAIL, "hardfail")


# ----------------------------------------------------------------------------------------- DKVERIFY

# The qmail-toaster default DKVERIFY="DEGIJKfh", status by status.
TOASTER_DKVERIFY = {
    DkStatus.OK: "accept",
    DkStatus.BADSIG: "accept",
    DkStatus.NOSIG: "accept",
    DkStatus.NOKEY: "reject",
    DkStatus.BADKEY: "reject",
    DkStatus.CANTVRFY: "tempfail",
    DkStatus.SYNTAX: "reject",
    DkStatus.NORESOURCE: "tempfail",
    DkStatus.ARGS: "reject",
    DkStatus.REVOKED: "reject",
    DkStatus.INTERNAL: "reject",
}


@pytest.mark.parametrize("status", list(DkStatus))
def test_toaster_default_dkverify(status: DkStatus) -> None:
    assert dkverify_decision("DEGIJKfh", status).action == TOASTER_DKVERIFY[status]


@pytest.mark.parametrize("status", list(DkStatus))
def test_dkverify_upper_lower_absent(status: DkStatus) -> None:
    letter = "ABCDEFGHIJK"[list(DkStatus).index(status)]
    others = "".join(other for other in "ABCDEFGHIJK" if other != letter)
    detail = "7.21" if status is DkStatus.OK else "7.20"
    assert dkverify_decision(letter, status) == Decision(
        "reject", 550, f"5.{detail}", f"DomainKeys/DKIM: {status.meaning}"
    )
    lower = dkverify_decision(letter.lower(), status)
    assert (lower.action, lower.code, lower.enhanced) == ("tempfail", 451, f"4.{detail}")
    assert dkverify_decision(others + others.lower(), status) == ACCEPT
    assert dkverify_decision(letter.lower() + letter, status).action == "reject"  # upper case wins
    assert dkverify_decision(None, status) == ACCEPT
    assert dkverify_decision("", status) == ACCEPT


# ------------------------------------------------------------------------------- DKIM as DomainKeys

DOMAIN = "example.com"
NOW = 1_700_000_000
MESSAGE = (
    b"From: Joe SixPack <joe@example.com>\r\n"
    b"To: Suzie Q <suzie@example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game. Are you hungry yet?\r\n"
)
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)


def _rsa_record(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def _resolver() -> StaticResolver:
    resolver = StaticResolver()
    records = {
        "good": _rsa_record(RSA_KEY),
        "revoked": "v=DKIM1; k=rsa; p=",
        "edtype": "v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(32)).decode(),
        "garbled": "v=DKIM1; k=rsa; p=AAAA",
    }
    for selector, text in records.items():
        resolver.add(f"{selector}._domainkey.{DOMAIN}", RRType.TXT, dkimcorpus.txt_rdata(text))
    resolver.add_timeout(f"slow._domainkey.{DOMAIN}")
    return resolver


RESOLVER = _resolver()


def signed(*selectors: str, raw: bytes = MESSAGE, **signer: object) -> bytes:
    signers = [DkimSigner(DOMAIN, selector, RSA_KEY, **signer) for selector in selectors]  # type: ignore[arg-type]
    return sign_message(raw, signers, timestamp=NOW)


def dkimpy_signed(**options: object) -> bytes:
    """Signed by dkimpy, which can still make what our signer refuses to (rsa-sha1, l=)."""
    pem = RSA_KEY.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    headers = [b"from", b"subject"]
    field: bytes = peers.dkimpy().sign(
        MESSAGE, b"good", DOMAIN.encode(), pem, include_headers=headers, **options
    )
    return field + MESSAGE


async def verdicts_of(raw: bytes, **options: object) -> list[DkimVerdict]:
    verify_options = DkimVerifyOptions(now=NOW + 10, **options)  # type: ignore[arg-type]
    return await verify_dkim(Message.parse(raw), RESOLVER, verify_options)


def altered(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert old in raw
    return raw.replace(old, new, 1)


async def test_unsigned_is_nosig() -> None:
    assert dkim_status(await verdicts_of(MESSAGE)) is DkStatus.NOSIG
    assert dkim_status([]) is DkStatus.NOSIG


async def test_pass_is_ok() -> None:
    assert dkim_status(await verdicts_of(signed("good"))) is DkStatus.OK


@pytest.mark.parametrize(
    ("old", "new"),
    [(b"hungry yet", b"hungry now"), (b"Subject: Is dinner", b"Subject: Is lunch")],
    ids=["body hash", "signature"],
)
async def test_altered_message_is_badsig(old: bytes, new: bytes) -> None:
    verdicts = await verdicts_of(altered(signed("good"), old, new))
    assert verdicts[0].result.value == "fail"
    assert dkim_status(verdicts) is DkStatus.BADSIG


async def test_expired_signature_is_badsig() -> None:
    verdicts = await verdicts_of(signed("good", expiration=5))
    assert verdicts[0].reason == "signature expired"
    assert dkim_status(verdicts) is DkStatus.BADSIG


async def test_rsa_sha1_policy_is_badsig() -> None:
    verdicts = await verdicts_of(dkimpy_signed(signature_algorithm=b"rsa-sha1"))
    assert verdicts[0].result.value == "policy"
    assert dkim_status(verdicts) is DkStatus.BADSIG


async def test_partial_body_policy_is_badsig() -> None:
    raw = dkimpy_signed(length=True) + b"\r\nAppended: buy now\r\n"
    verdicts = await verdicts_of(raw)
    assert verdicts[0].result.value == "policy"
    assert dkim_status(verdicts) is DkStatus.BADSIG


async def test_revoked_key() -> None:
    verdicts = await verdicts_of(signed("revoked"))
    assert verdicts[0].reason == "key revoked"
    assert dkim_status(verdicts) is DkStatus.REVOKED


async def test_missing_key_record_is_nokey() -> None:
    verdicts = await verdicts_of(signed("missing"))
    assert verdicts[0].result.value == "permerror"
    assert dkim_status(verdicts) is DkStatus.NOKEY


@pytest.mark.parametrize("selector", ["edtype", "garbled"])
async def test_unusable_key_record_is_badkey(selector: str) -> None:
    verdicts = await verdicts_of(signed(selector))
    assert verdicts[0].result.value == "permerror"
    assert dkim_status(verdicts) is DkStatus.BADKEY


async def test_too_small_key_is_badkey() -> None:
    verdicts = await verdicts_of(signed("good"), min_rsa_bits=2048)
    assert verdicts[0].reason.startswith("key too small")
    assert dkim_status(verdicts) is DkStatus.BADKEY


async def test_dns_timeout_is_cantvrfy() -> None:
    verdicts = await verdicts_of(signed("slow"))
    assert verdicts[0].result.value == "temperror"
    assert dkim_status(verdicts) is DkStatus.CANTVRFY


async def test_malformed_signature_is_syntax() -> None:
    verdicts = await verdicts_of(altered(signed("good"), b"bh=", b"bh=!!"))
    assert verdicts[0].result.value == "neutral"
    assert dkim_status(verdicts) is DkStatus.SYNTAX


async def test_unsupported_algorithm_is_ignored() -> None:
    raw = altered(signed("good"), b"a=rsa-sha256", b"a=rsa-sha512")
    verdicts = await verdicts_of(raw)
    assert verdicts[0].reason == "unsupported algorithm a=rsa-sha512"
    assert dkim_status(verdicts) is DkStatus.NOSIG
    both = altered(signed("good", "missing"), b"a=rsa-sha256", b"a=rsa-sha512")
    assert dkim_status(await verdicts_of(both)) is DkStatus.NOKEY


async def test_signatures_beyond_the_limit_are_noresource() -> None:
    assert dkim_status(await verdicts_of(signed("good"), max_signatures=0)) is DkStatus.NORESOURCE
    verdicts = await verdicts_of(signed("missing", "good"), max_signatures=1)
    assert [verdict.reason.split(":")[0] for verdict in verdicts] == [
        "no key record at missing._domainkey.example.com",
        "not evaluated",
    ]
    assert dkim_status(verdicts) is DkStatus.NOKEY


async def test_any_pass_wins() -> None:
    raw = signed("revoked", "slow", "good", "missing")
    assert dkim_status(await verdicts_of(raw)) is DkStatus.OK


@pytest.mark.parametrize(
    ("selectors", "expected"),
    [
        (("missing", "slow"), DkStatus.CANTVRFY),
        (("missing", "revoked"), DkStatus.REVOKED),
        (("garbled", "missing"), DkStatus.BADKEY),
    ],
)
async def test_most_meaningful_failure(selectors: tuple[str, ...], expected: DkStatus) -> None:
    assert dkim_status(await verdicts_of(signed(*selectors))) is expected


async def test_badsig_outranks_key_problems() -> None:
    raw = altered(signed("good", "missing"), b"hungry yet", b"hungry now")
    verdicts = await verdicts_of(raw)
    assert {verdict.result.value for verdict in verdicts} == {"fail", "permerror"}
    assert dkim_status(verdicts) is DkStatus.BADSIG


async def test_dkverify_applies_to_dkim() -> None:
    decision = dkverify_decision("DEGIJKfh", dkim_status(await verdicts_of(signed("missing"))))
    assert decision.reply == "550 5.7.20 DomainKeys/DKIM: no public key published for the selector"


# ------------------------------------------------------------------------------------------- DKSIGN


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    create_key(keys, "example.com", "default", key_type=KeyType.ED25519)
    return keys


def test_qmail_path_maps_onto_the_key_store(keys_dir: Path) -> None:
    found = dksign_key("/var/qmail/control/domainkeys/%/default", "Example.COM", keys_dir)
    assert found == ("default", keys_dir / "example.com" / "default")
    assert dksign_key("control/domainkeys/%/default", "example.com", keys_dir) == found


def test_missing_key_means_do_not_sign(keys_dir: Path) -> None:
    assert dksign_key("/var/qmail/control/domainkeys/%/private", "example.com", keys_dir) is None
    assert dksign_key("/var/qmail/control/domainkeys/%/default", "example.org", keys_dir) is None
    assert dksign_key("/nonexistent/dkim/%.key", "example.com", keys_dir) is None


def test_another_domains_key_is_not_used(keys_dir: Path) -> None:
    assert dksign_key("/var/qmail/control/domainkeys/example.com/default", "example.org", keys_dir) is None
    fixed = dksign_key("/var/qmail/control/domainkeys/example.com/default", "example.com", keys_dir)
    assert fixed == ("default", keys_dir / "example.com" / "default")


def test_from_domain_never_shapes_a_path(keys_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not a key")
    for hostile in ("../secret", "..", "a/b.com", "", "example.com/../../secret", "ex ample.com"):
        assert dksign_key(f"{keys_dir}/%", hostile, keys_dir) is None
        assert dksign_key("/var/qmail/control/domainkeys/%/default", hostile, keys_dir) is None


def test_absolute_path_to_an_existing_file_is_used_as_is(tmp_path: Path, keys_dir: Path) -> None:
    legacy = tmp_path / "dkim" / "example.com.key"
    legacy.parent.mkdir()
    legacy.write_text("pem")
    assert dksign_key(f"{tmp_path}/dkim/%.key", "example.com", keys_dir) == ("example.com.key", legacy)


def test_legacy_qmail_key_outside_the_store_is_used(tmp_path: Path, keys_dir: Path) -> None:
    old = tmp_path / "qmail" / "control" / "domainkeys" / "example.net" / "private"
    old.parent.mkdir(parents=True)
    old.write_text("pem")
    assert dksign_key(f"{tmp_path}/qmail/control/domainkeys/%/private", "example.net", keys_dir) == (
        "private",
        old,
    )


def test_ed25519_key_in_store_is_found_by_the_signer_path(keys_dir: Path) -> None:
    found = dksign_key("/var/qmail/control/domainkeys/%/default", "example.com", keys_dir)
    assert found is not None
    pem = found[1].read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)

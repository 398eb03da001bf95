"""``mailtoaster check`` end to end: the command (as a subprocess and in-process) asks the loopback test
DNS server through ``--nameserver`` and reports with the exit status of its worst finding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mailtoaster.keys import list_keys
from mailtoaster.records import bind_line, tinydns_line
from tests import test_doctor as zones
from tests.clirun import assert_usage_error, run
from tests.dnsserver import DnsTestServer

DOMAIN = zones.DOMAIN


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tests.test_doctor.make_key_store`, made once per module."""
    return zones.make_key_store(tmp_path_factory)


def check_args(server: DnsTestServer, keys_dir: Path, *extra: str) -> list[str]:
    return [
        "check",
        DOMAIN,
        "--ip",
        zones.SERVER_IP,
        "--keys-dir",
        str(keys_dir),
        "--nameserver",
        server.nameserver_arg,
        "--dns-timeout",
        "0.5",
        *extra,
    ]


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailtoaster", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- as a subprocess -----------------------------------------------------------------------------


def test_correct_zone_exits_0(dns_server: DnsTestServer, store: Path) -> None:
    dns_server.load_zone(zones.good_zone(store))
    completed = run_command(*check_args(dns_server, store))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    assert lines[0] == f"DNS check of {DOMAIN}"
    assert all(line.startswith("ok ") for line in lines[1:-1]), completed.stdout
    assert lines[-1].startswith("summary: ") and lines[-1].endswith("0 warnings, 0 errors (exit status 0)")


def test_broken_zone_exits_2_and_prints_the_records_to_publish(
    dns_server: DnsTestServer, store: Path
) -> None:
    (key,) = [k for k in list_keys(store, DOMAIN) if k.selector == "s2024"]
    zone = zones.replace_txt(zones.good_zone(store), key.record_name).replace(zones.PTR, "")
    dns_server.load_zone(zone)
    completed = run_command(*check_args(dns_server, store))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    out = completed.stdout
    (expected,) = [r for r in zones.planned(store) if r.name == key.record_name]
    assert f"error     dkim.record: selector s2024 ({key.record_name}): no key record published" in out
    assert f"BIND:    {bind_line(expected)}" in out
    assert f"tinydns: {tinydns_line(expected)}" in out
    assert "error     ptr: 192.0.2.25 (sending address) has no reverse DNS" in out
    assert f"BIND:    25.2.0.192.in-addr.arpa. 3600 IN PTR {zones.MAIL_HOST}." in out


def test_json_document_with_warnings_exits_1(dns_server: DnsTestServer, store: Path) -> None:
    zone = zones.replace_txt(zones.good_zone(store), DOMAIN, f"v=spf1 ip4:{zones.SERVER_IP} +all")
    dns_server.load_zone(zone)
    completed = run_command(*check_args(dns_server, store, "--json"))
    assert completed.returncode == 1, completed.stderr
    document = json.loads(completed.stdout)
    assert document["domain"] == DOMAIN
    assert document["status"] == "warning" and document["exit_code"] == 1
    assert document["counts"]["warning"] == 1 and document["counts"]["error"] == 0
    (finding,) = [f for f in document["findings"] if f["severity"] != "ok"]
    assert finding["check"] == "spf.all"
    (record,) = finding["suggested_records"]
    assert record == {
        "name": DOMAIN,
        "type": "TXT",
        "ttl": 3600,
        "data": f"v=spf1 ip4:{zones.SERVER_IP} ~all",
        "purpose": "SPF: hosts allowed to send (RFC 7208)",
        "bind": f'{DOMAIN}. 3600 IN TXT "v=spf1 ip4:{zones.SERVER_IP} ~all"',
        "tinydns": f"'{DOMAIN}:v=spf1 ip4\\072{zones.SERVER_IP} ~all:3600",
    }


def test_timeout_is_a_clear_report(dns_server: DnsTestServer, store: Path) -> None:
    dns_server.load_zone(zones.good_zone(store))
    dns_server.drop(DOMAIN)
    completed = run_command(*check_args(dns_server, store))
    assert completed.returncode == 2
    assert completed.stderr == ""
    assert "error     dns: cannot check example.com: DNS timeout" in completed.stdout


# --- in-process ----------------------------------------------------------------------------------


def test_nonexistent_domain(
    dns_server: DnsTestServer, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dns_server.load_zone("other.example. 3600 IN A 192.0.2.1\n")
    code, out, err = run(capsys, *check_args(dns_server, store))
    assert code == 2 and err == ""
    assert "error     domain: example.com does not exist in DNS (NXDOMAIN" in out
    assert out.count("BIND: ") == len(zones.planned(store))


def test_no_records_and_garbage(
    dns_server: DnsTestServer, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dns_server.load_zone(zones.SOA + f'{DOMAIN}. 3600 IN TXT "\\000garbage\\255" "v=spf1 ~all"\n')
    code, out, err = run(capsys, *check_args(dns_server, store, "--json"))
    assert code == 2 and err == ""
    document = json.loads(out)
    severities = {(f["check"], f["severity"]) for f in document["findings"]}
    assert {
        ("mx", "error"),
        ("spf.record", "error"),
        ("dkim.record", "error"),
        ("ptr", "error"),
    } <= severities


def test_dmarc_syntax_error_in_text(
    dns_server: DnsTestServer, store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dns_server.load_zone(zones.replace_txt(zones.good_zone(store), f"_dmarc.{DOMAIN}", "v=DMARC1; p=rejekt"))
    code, out, _ = run(capsys, *check_args(dns_server, store))
    assert code == 2
    assert "error     dmarc.syntax: DMARC record 'v=DMARC1; p=rejekt' has no valid p=" in out
    assert f'BIND:    _dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=quarantine"' in out
    assert f"tinydns: '_dmarc.{DOMAIN}:v=DMARC1; p=quarantine:3600" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["check", "exa mple.com", "--nameserver", "127.0.0.1:9"], "exa mple.com"),
        (
            ["check", DOMAIN, "--ip", "999.1.1.1", "--nameserver", "127.0.0.1:9"],
            "invalid IP address '999.1.1.1'",
        ),
        (["check", DOMAIN, "--nameserver", "ns.example.com"], "give an IP address"),
        (["check", DOMAIN, "--dns-timeout", "0", "--nameserver", "127.0.0.1:9"], "--dns-timeout"),
    ],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], fragment: str) -> None:
    assert_usage_error(*run(capsys, *args), fragment)


def test_missing_domain_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(capsys, "check")
    assert exit_info.value.code == 2
    assert "the following arguments are required: DOMAIN" in capsys.readouterr().err

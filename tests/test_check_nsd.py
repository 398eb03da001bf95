"""``mailtoaster check`` against a real authoritative DNS server: Debian's NSD on 127.0.0.1.

tests/test_doctor.py and tests/test_cli_check.py ask our own small server (tests/dnsserver.py); here
the answers come from NSD, with its own zone-file parser, negative answers (SOA in the authority
section), NS records, AA flag and REFUSED for names outside its zones. Each test writes the zones,
starts a private ``nsd -d`` on a free loopback port (no systemd service, no privilege drop, every file
in a temporary directory), runs ``mailtoaster check ... --nameserver 127.0.0.1:PORT --json`` as a
subprocess and stops NSD again (one NSD per zone set: starting one takes a fraction of a second).

The correct zone is what ``dns records`` prints for a key store made by the project's own key
generation (the helpers of tests/test_doctor.py), with the server's reverse zone and the DMARC report
destination's zone (which authorises the reports); each broken variant changes one thing and the test
asserts the check id, its severity and the record ``check`` suggests.

Without NSD the tests skip, except under ``CI=true``, where they fail (``scripts/test`` installs it).
"""

from __future__ import annotations

import functools
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from mailtoaster.dns import RRType
from mailtoaster.keys import create_key, list_keys
from mailtoaster.records import DnsRecord, bind_line, tinydns_line
from tests import test_doctor as zones
from tests.peers import require

DOMAIN = zones.DOMAIN
SERVER_IP = zones.SERVER_IP
REVERSE_ZONE = "2.0.192.in-addr.arpa"
"""The reverse zone holding the PTR of SERVER_IP (192.0.2.25)."""
INCLUDES_ZONE = "example.net"
"""Where the SPF include chain of the lookup-limit variant lives (``zones.include_chain``)."""
RUA_ZONE = "example.org"
RUA = f"dmarc@reports.{RUA_ZONE}"
"""The DMARC aggregate report destination: another domain, which must authorise the reports."""
RUA_AUTHORISATION = f'{DOMAIN}._report._dmarc.reports.{RUA_ZONE}. 3600 IN TXT "v=DMARC1"\n'
ORIGINS = (DOMAIN, REVERSE_ZONE, INCLUDES_ZONE, RUA_ZONE)

NSD_PACKAGE = "nsd"
START_TIMEOUT = 10.0
"""Seconds NSD may take to answer for all its zones (it takes a fraction of a second)."""
START_ATTEMPTS = 3
"""Tries with a fresh port when another process took the free port before NSD bound it."""
CHECK_TIMEOUT = 60
"""Seconds one ``mailtoaster check`` subprocess may run: a hang must end the test (never asserted on)."""
DNS_TIMEOUT = "2"
"""``--dns-timeout``: NSD answers every question, so no lookup should ever wait for it."""


# --- NSD -----------------------------------------------------------------------------------------


def nsd_binary() -> str | None:
    """Where ``nsd`` is (Debian puts it in /usr/sbin, which a non-root PATH may lack)."""
    found = shutil.which("nsd")
    if found is None and Path("/usr/sbin/nsd").exists():
        found = "/usr/sbin/nsd"
    return found


@functools.cache
def nsd_problem() -> str | None:
    """None when NSD can be run, else why not."""
    binary = nsd_binary()
    if binary is None:
        return f"NSD is not installed (Debian package {NSD_PACKAGE})"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=30, check=False)
    if "NSD version 4." not in done.stdout + done.stderr:
        return f"{binary} -v does not say NSD version 4: {(done.stdout + done.stderr).strip()!r}"
    return None


@pytest.fixture(scope="module")
def nsd() -> str:
    require(nsd_problem())
    binary = nsd_binary()
    assert binary is not None
    return binary


def free_port() -> int:
    """A loopback port free for both UDP and TCP (NSD listens on both)."""
    while True:
        with closing(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as udp:
            udp.bind(("127.0.0.1", 0))
            port: int = udp.getsockname()[1]
            with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port


def split_zones(text: str) -> dict[str, str]:
    """One master file per zone of ORIGINS from BIND text with absolute owner names (what
    ``format_bind`` and the zone helpers write): each record goes to the zone its owner is in, and
    every zone gets its own SOA and NS (the SOA lines of ``text`` are dropped)."""
    lines = {
        origin: [
            f"{origin}. 3600 IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60",
            f"{origin}. 3600 IN NS ns.{DOMAIN}.",
        ]
        for origin in ORIGINS
    }
    lines[DOMAIN].append(f"ns.{DOMAIN}. 3600 IN A 192.0.2.53")
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith(";"):
            continue
        if fields[2:4] == ["IN", "SOA"]:
            continue
        owner = fields[0].rstrip(".").lower()
        matching = [origin for origin in ORIGINS if owner == origin or owner.endswith("." + origin)]
        if not matching:
            raise ValueError(f"{owner} is in none of the zones {ORIGINS}")
        lines[max(matching, key=len)].append(line)
    return {origin: "\n".join(records) + "\n" for origin, records in lines.items()}


def nsd_conf(workdir: Path, port: int, zone_files: dict[str, str]) -> str:
    """A configuration that keeps every file NSD writes in ``workdir`` and runs as the current user."""
    server = [
        "server:",
        "    ip-address: 127.0.0.1",
        f"    port: {port}",
        "    do-ip4: yes",
        "    do-ip6: no",
        "    server-count: 1",
        '    username: ""',
        '    chroot: ""',
        f'    zonesdir: "{workdir}"',
        f'    pidfile: "{workdir / "nsd.pid"}"',
        '    database: ""',
        f'    xfrdfile: "{workdir / "xfrd.state"}"',
        f'    xfrdir: "{workdir}"',
        f'    zonelistfile: "{workdir / "zone.list"}"',
        f'    logfile: "{workdir / "nsd.log"}"',
        "    verbosity: 2",
        "remote-control:",
        "    control-enable: no",
    ]
    for origin, file_name in zone_files.items():
        server += ["zone:", f'    name: "{origin}"', f'    zonefile: "{file_name}"']
    return "\n".join(server) + "\n"


@dataclass
class NsdServer:
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def nameserver_arg(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        path = self.workdir / "nsd.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _serves(port: int, origin: str) -> bool:
    """Whether NSD on ``port`` answers authoritatively for ``origin`` (its zone file was loaded)."""
    query = dns.message.make_query(origin, "SOA")
    try:
        response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.2)
    except (OSError, dns.exception.DNSException):
        return False
    return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AA)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_nsd(binary: str, zone_text: str, workdir: Path) -> Iterator[NsdServer]:
    """NSD serving ``zone_text`` (split into the zones of ORIGINS) on 127.0.0.1, stopped after."""
    workdir.mkdir(parents=True, exist_ok=True)
    zone_files = {}
    for origin, text in split_zones(zone_text).items():
        file_name = f"{origin}.zone"
        (workdir / file_name).write_text(text, encoding="ascii")
        zone_files[origin] = file_name
    problem = ""
    for _attempt in range(START_ATTEMPTS):
        port = free_port()
        conf = workdir / "nsd.conf"
        conf.write_text(nsd_conf(workdir, port, zone_files), encoding="ascii")
        (workdir / "nsd.log").unlink(missing_ok=True)
        stderr = (workdir / "nsd.stderr").open("wb")
        try:
            process = subprocess.Popen(
                [binary, "-d", "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr
            )
        finally:
            stderr.close()  # the child has its own copy
        server = NsdServer(port, process, workdir)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            pending = list(ORIGINS)
            while pending and process.poll() is None and time.monotonic() < deadline:
                if _serves(port, pending[0]):
                    pending.pop(0)
                else:
                    time.sleep(0.02)
            if not pending:
                yield server
                return
            problem = server.log() + (workdir / "nsd.stderr").read_text(errors="replace")
            if "already in use" not in problem:
                raise RuntimeError(f"NSD did not serve the zones {pending} on port {port}:\n{problem}")
        finally:
            _stop(process)
    raise RuntimeError(f"NSD found no free port in {START_ATTEMPTS} attempts:\n{problem}")


# --- running check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckRun:
    returncode: int
    document: dict[str, Any]
    stderr: str

    def text(self) -> str:
        return json.dumps(self.document, indent=1)

    def problems(self) -> list[tuple[str, str]]:
        return [(f["check"], f["severity"]) for f in self.document["findings"] if f["severity"] != "ok"]

    def one(self, check: str, severity: str) -> dict[str, Any]:
        """The single finding ``check`` with ``severity`` (fails with the whole report otherwise)."""
        findings: list[dict[str, Any]] = self.document["findings"]
        matching = [f for f in findings if f["check"] == check and f["severity"] == severity]
        assert len(matching) == 1, self.text()
        return matching[0]


def check_with_nsd(
    binary: str, zone_text: str, keys_dir: Path, workdir: Path, ips: Sequence[str] = (SERVER_IP,)
) -> CheckRun:
    """``mailtoaster check DOMAIN --json`` (as a subprocess) against NSD serving ``zone_text``."""
    with running_nsd(binary, zone_text, workdir / "nsd") as server:
        command = [sys.executable, "-m", "mailtoaster", "check", DOMAIN]
        for ip in ips:
            command += ["--ip", ip]
        command += ["--keys-dir", str(keys_dir), "--nameserver", server.nameserver_arg]
        command += ["--dns-timeout", DNS_TIMEOUT, "--json"]
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=CHECK_TIMEOUT, check=False
        )
        log = server.log()
    assert "Traceback" not in completed.stderr, completed.stderr
    assert " error: " not in log, log  # NSD accepted every zone file
    document: dict[str, Any] = json.loads(completed.stdout)
    assert document["exit_code"] == completed.returncode, completed.stdout
    return CheckRun(completed.returncode, document, completed.stderr)


def txt_suggestion(name: str, text: str, purpose: str) -> dict[str, Any]:
    """A suggested TXT record as ``check --json`` shows it, written by the project's record writers."""
    return record_document(DnsRecord(name, RRType.TXT, 3600, text, purpose))


def record_document(record: DnsRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "type": str(record.rrtype),
        "ttl": record.ttl,
        "data": str(record.data),
        "purpose": record.purpose,
        "bind": bind_line(record),
        "tinydns": tinydns_line(record),
    }


SPF_PURPOSE = "SPF: hosts allowed to send (RFC 7208)"
FIXED_SPF = f"v=spf1 ip4:{SERVER_IP} ~all"


# --- the zones -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tests.test_doctor.make_key_store`, made once per module."""
    return zones.make_key_store(tmp_path_factory)


def good_zone(keys_dir: Path) -> str:
    """What ``dns records example.com --ip 192.0.2.25 --dmarc-rua ...`` prints, the PTR of the server
    and the report destination's authorisation."""
    return zones.good_zone(keys_dir, dmarc_rua=RUA) + RUA_AUTHORISATION


# --- the correct zone ----------------------------------------------------------------------------


def test_correct_zone_exits_0(nsd: str, store: Path, tmp_path: Path) -> None:
    run = check_with_nsd(nsd, good_zone(store), store, tmp_path)
    assert run.returncode == 0, run.text()
    assert run.stderr == ""
    assert run.problems() == []
    assert run.document["status"] == "ok"
    assert all(not f["suggested_records"] for f in run.document["findings"])
    checks = [f["check"] for f in run.document["findings"]]
    assert zones.CORRECT_ZONE_CHECKS | {"dmarc.report"} <= set(checks)
    assert checks.count("dkim.record") == 2
    assert f"{SERVER_IP} -> {zones.MAIL_HOST} -> {SERVER_IP}" in run.one("ptr", "ok")["message"]
    assert "authorises reports" in run.one("dmarc.report", "ok")["message"]


# --- the broken variants -------------------------------------------------------------------------


def test_missing_dkim_record(nsd: str, store: Path, tmp_path: Path) -> None:
    (key,) = [k for k in list_keys(store, DOMAIN) if k.selector == "s2024"]
    run = check_with_nsd(nsd, zones.replace_txt(good_zone(store), key.record_name), store, tmp_path)
    assert run.returncode == 2
    assert run.problems() == [("dkim.record", "error")], run.text()
    finding = run.one("dkim.record", "error")
    assert finding["message"].startswith(f"selector s2024 ({key.record_name}): no key record published")
    (expected,) = [r for r in zones.planned(store, dmarc_rua=RUA) if r.name == key.record_name]
    assert finding["suggested_records"] == [record_document(expected)]
    assert finding["suggested_records"][0]["data"] == key.dkim_record


def test_key_that_does_not_match(nsd: str, store: Path, tmp_path: Path) -> None:
    (key,) = [k for k in list_keys(store, DOMAIN) if k.selector == "s2024"]
    other = create_key(tmp_path / "other-keys", DOMAIN, "s2024")
    zone = zones.replace_txt(good_zone(store), key.record_name, other.dkim_record)
    run = check_with_nsd(nsd, zone, store, tmp_path)
    assert run.returncode == 2
    assert run.problems() == [("dkim.match", "error")], run.text()
    finding = run.one("dkim.match", "error")
    assert "is not the private key" in finding["message"]
    (expected,) = [r for r in zones.planned(store, dmarc_rua=RUA) if r.name == key.record_name]
    assert finding["suggested_records"] == [record_document(expected)]
    assert expected.data == key.dkim_record != other.dkim_record


def test_512_bit_key(nsd: str, tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    (keys_dir / DOMAIN).mkdir(parents=True)
    (keys_dir / DOMAIN / "private").write_bytes(zones.RSA_512_PKCS1)  # where qmail's dknewkey put it
    run = check_with_nsd(nsd, good_zone(keys_dir), keys_dir, tmp_path)
    assert run.returncode == 2
    assert run.problems() == [("dkim.size", "error")], run.text()
    finding = run.one("dkim.size", "error")
    assert "512-bit" in finding["message"] and "dknewkey" in finding["message"]
    assert "broken" in finding["message"]
    assert finding["suggested_records"] == []  # no record makes a short key long
    assert f"mailtoaster keygen {DOMAIN} --selector NEW" in finding["hint"]
    assert run.one("dkim.record", "ok")  # published and matching: only the size is wrong


def test_spf_with_eleven_lookups(nsd: str, store: Path, tmp_path: Path) -> None:
    record = f"v=spf1 ip4:{SERVER_IP} include:_spf.{INCLUDES_ZONE} ~all"
    zone = zones.replace_txt(good_zone(store), DOMAIN, record) + zones.include_chain(10)
    run = check_with_nsd(nsd, zone, store, tmp_path)
    assert run.returncode == 2
    assert run.problems() == [("spf.lookups", "error")], run.text()
    finding = run.one("spf.lookups", "error")
    assert finding["message"].startswith("11 DNS-querying terms after expanding includes")
    assert finding["suggested_records"] == [txt_suggestion(DOMAIN, FIXED_SPF, SPF_PURPOSE)]
    assert finding["suggested_records"][0]["bind"] == f'{DOMAIN}. 3600 IN TXT "{FIXED_SPF}"'
    assert run.one("spf.ip", "ok")  # the server matches before the limit is reached


def test_two_spf_records(nsd: str, store: Path, tmp_path: Path) -> None:
    zone = zones.replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} -all", "v=spf1 mx ~all")
    run = check_with_nsd(nsd, zone, store, tmp_path)
    assert run.returncode == 2
    finding = run.one("spf.record", "error")
    assert "2 SPF records" in finding["message"] and "permerror" in finding["message"]
    merged = f"v=spf1 ip4:{SERVER_IP} mx -all"
    assert finding["suggested_records"] == [txt_suggestion(DOMAIN, merged, SPF_PURPOSE)]
    assert finding["hint"] == "delete the other v=spf1 records"
    # The server's address as receivers see it meanwhile: permerror, with the same merged record.
    assert "permerror" in run.one("spf.ip", "error")["message"]
    assert run.problems() == [("spf.record", "error"), ("spf.ip", "error")], run.text()


def test_plus_all(nsd: str, store: Path, tmp_path: Path) -> None:
    zone = zones.replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} +all")
    run = check_with_nsd(nsd, zone, store, tmp_path)
    assert run.returncode == 1
    assert run.problems() == [("spf.all", "warning")], run.text()
    finding = run.one("spf.all", "warning")
    assert "+all" in finding["message"] and "every host" in finding["message"]
    assert finding["suggested_records"] == [txt_suggestion(DOMAIN, FIXED_SPF, SPF_PURPOSE)]
    assert finding["suggested_records"][0]["tinydns"] == f"'{DOMAIN}:v=spf1 ip4\\072{SERVER_IP} ~all:3600"


def test_dmarc_syntax_error(nsd: str, store: Path, tmp_path: Path) -> None:
    name = f"_dmarc.{DOMAIN}"
    run = check_with_nsd(
        nsd, zones.replace_txt(good_zone(store), name, "v=DMARC1; p=rejekt; adkim=s"), store, tmp_path
    )
    assert run.returncode == 2
    assert run.problems() == [("dmarc.syntax", "error")], run.text()
    finding = run.one("dmarc.syntax", "error")
    assert "p=" in finding["message"] and "receivers apply no DMARC policy" in finding["message"]
    (suggestion,) = finding["suggested_records"]
    assert suggestion["data"] == "v=DMARC1; p=quarantine; adkim=s"
    assert suggestion["bind"] == f'{name}. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=s"'
    assert suggestion["tinydns"] == f"'{name}:v=DMARC1; p=quarantine; adkim=s:3600"


def test_missing_ptr(nsd: str, store: Path, tmp_path: Path) -> None:
    """The reverse zone is served, but has no PTR for the server: NSD answers NXDOMAIN."""
    run = check_with_nsd(nsd, good_zone(store).replace(zones.PTR, ""), store, tmp_path)
    assert run.returncode == 2
    assert run.problems() == [("ptr", "error")], run.text()
    finding = run.one("ptr", "error")
    assert finding["message"].startswith(f"{SERVER_IP} (sending address) has no reverse DNS")
    (suggestion,) = finding["suggested_records"]
    assert suggestion["bind"] == f"25.2.0.192.in-addr.arpa. 3600 IN PTR {zones.MAIL_HOST}."
    assert suggestion["tinydns"] == f"^25.2.0.192.in-addr.arpa:{zones.MAIL_HOST}:3600"


def test_report_destination_without_authorisation(nsd: str, store: Path, tmp_path: Path) -> None:
    """The report destination's zone is served but does not authorise reports for example.com."""
    run = check_with_nsd(nsd, good_zone(store).replace(RUA_AUTHORISATION, ""), store, tmp_path)
    assert run.returncode == 1
    assert run.problems() == [("dmarc.report", "warning")], run.text()
    (suggestion,) = run.one("dmarc.report", "warning")["suggested_records"]
    assert suggestion["bind"] == RUA_AUTHORISATION.rstrip("\n")
    assert suggestion["tinydns"] == f"'{DOMAIN}._report._dmarc.reports.{RUA_ZONE}:v=DMARC1:3600"


# --- what only a real server does ----------------------------------------------------------------


def test_apex_txt_too_big_for_udp_is_read_over_tcp(nsd: str, store: Path, tmp_path: Path) -> None:
    """Site-verification records make the apex TXT answer larger than the EDNS UDP size mailtoaster
    asks for (1232): NSD truncates it (TC) and the SPF record has to be read over TCP."""
    verifications = "".join(f'{DOMAIN}. 3600 IN TXT "site-verification-{i}={"x" * 200}"\n' for i in range(8))
    zone = good_zone(store) + verifications
    with running_nsd(nsd, zone, tmp_path / "probe") as server:
        query = dns.message.make_query(DOMAIN, "TXT", use_edns=0, payload=1232)
        response = dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)
        assert response.flags & dns.flags.TC
    run = check_with_nsd(nsd, zone, store, tmp_path)
    assert run.returncode == 0, run.text()
    assert run.one("spf.record", "ok")["message"] == f"SPF record: v=spf1 ip4:{SERVER_IP} ~all"

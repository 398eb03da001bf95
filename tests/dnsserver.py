"""A small DNS server for tests: answers from BIND zone text on loopback, over UDP and TCP.

It plays the recursive server a stub resolver talks to, with all the data it needs in one zone text
(absolute names for as many domains as you like, or ``$ORIGIN`` and relative names): it follows
CNAME chains inside its data, answers NXDOMAIN or no-data with the enclosing SOA (if the text has
one) so negative caching can be tested, expands ``*`` wildcards, and truncates UDP answers that do
not fit the client's buffer so resolvers fall back to TCP. Faults can be injected per name:

* :meth:`DnsTestServer.drop` — never answer (the client times out);
* :meth:`DnsTestServer.servfail` / :meth:`DnsTestServer.refuse` — answer SERVFAIL / REFUSED;
* :meth:`DnsTestServer.truncate` — answer over UDP with only the TC bit, forcing TCP.

Every query received is logged (:attr:`DnsTestServer.queries`, :meth:`DnsTestServer.count`), so tests
can tell a cache hit from a query.

The server runs its own event loop in a background thread, so it serves synchronous tests, async
tests (whatever their loop) and subprocesses alike. Use the ``dns_server`` fixture from
``tests/conftest.py``, or directly::

    with DnsTestServer('example.com. 300 IN A 192.0.2.1') as server:
        resolver = LiveResolver([server.address], timeout=1)
        ...
        subprocess.run(["mailtoaster", ..., "--nameserver", server.nameserver_arg])
"""

from __future__ import annotations

import asyncio
import enum
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from mailtoaster.dns.zone import parse_master_file

Transport = Literal["udp", "tcp"]

MAX_CHAIN = 16
"""CNAME links followed before answering SERVFAIL (a loop in the zone data)."""
_UDP_LIMIT_WITHOUT_EDNS = 512
_EMPTY_NODE = dns.node.Node()  # type: ignore[no-untyped-call]  # dnspython leaves __init__ unannotated


class Fault(enum.Enum):
    DROP = "drop"
    SERVFAIL = "servfail"
    REFUSED = "refused"
    TRUNCATE = "truncate"


@dataclass(frozen=True)
class Query:
    """One query as the server received it: name lower-cased without the trailing dot, type as text."""

    name: str
    rrtype: str
    transport: Transport


def _name(text: str) -> dns.name.Name:
    return dns.name.from_text(text, origin=dns.name.root)


def _rdtype(rrtype: str | None) -> dns.rdatatype.RdataType | None:
    return None if rrtype is None else dns.rdatatype.from_text(str(rrtype))


def _parse_zone(text: str) -> dns.zone.Zone:
    # mailtoaster's reading of dnspython's parser: origin ".", absolute names, an SOA at any apex.
    return parse_master_file(text, "<test zone>")


class DnsTestServer:
    """Authoritative-and-recursive-looking DNS server on ``host`` (default 127.0.0.1), port chosen by the OS.

    UDP and TCP listen on the same port. All methods may be called from any thread while it runs.
    """

    def __init__(self, zone_text: str = "", *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._lock = threading.Lock()
        self._zone = _parse_zone(zone_text)
        self._faults: dict[tuple[dns.name.Name, dns.rdatatype.RdataType | None], Fault] = {}
        self._queries: list[Query] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> DnsTestServer:
        udp, tcp = _bind_same_port(self.host)
        self.port = udp.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(udp, tcp), name="dns-test-server", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("DNS test server did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError("DNS test server failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> DnsTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, the form ``LiveResolver`` takes."""
        return self.host, self.port

    @property
    def nameserver_arg(self) -> str:
        """The value for ``--nameserver``: ``127.0.0.1:PORT`` or ``[::1]:PORT``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    # -- data and faults -------------------------------------------------------------------------

    def load_zone(self, zone_text: str) -> None:
        """Replace all records with those of ``zone_text`` (BIND master-file syntax, origin ``.``).

        Raises :class:`mailtoaster.dns.ZoneFileError` for text that does not parse.
        """
        zone = _parse_zone(zone_text)
        with self._lock:
            self._zone = zone

    def drop(self, name: str, rrtype: str | None = None) -> None:
        """Never answer queries for ``name`` (of ``rrtype``, or of any type): lookups time out."""
        self._set_fault(name, rrtype, Fault.DROP)

    def servfail(self, name: str, rrtype: str | None = None) -> None:
        """Answer queries for ``name`` (of ``rrtype``, or of any type) with SERVFAIL."""
        self._set_fault(name, rrtype, Fault.SERVFAIL)

    def refuse(self, name: str, rrtype: str | None = None) -> None:
        """Answer queries for ``name`` (of ``rrtype``, or of any type) with REFUSED."""
        self._set_fault(name, rrtype, Fault.REFUSED)

    def truncate(self, name: str, rrtype: str | None = None) -> None:
        """Answer UDP queries for ``name`` with an empty, truncated (TC) response; TCP answers normally."""
        self._set_fault(name, rrtype, Fault.TRUNCATE)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _set_fault(self, name: str, rrtype: str | None, fault: Fault) -> None:
        with self._lock:
            self._faults[(_name(name), _rdtype(rrtype))] = fault

    # -- query log -------------------------------------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        """A copy of the queries received so far, oldest first."""
        with self._lock:
            return list(self._queries)

    def count(
        self, name: str | None = None, rrtype: str | None = None, transport: Transport | None = None
    ) -> int:
        """How many queries matched every given criterion (name compared case-insensitively)."""
        wanted = None if name is None else _name(name).to_text(omit_final_dot=True).lower()
        return sum(
            1
            for q in self.queries
            if (wanted is None or q.name == wanted)
            and (rrtype is None or q.rrtype == rrtype.upper())
            and (transport is None or q.transport == transport)
        )

    def clear_queries(self) -> None:
        with self._lock:
            self._queries.clear()

    # -- answering -------------------------------------------------------------------------------

    def respond(self, wire: bytes, transport: Transport) -> bytes | None:
        """The wire-format response to one query, or None to stay silent. Public for unit tests."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not worth a FORMERR: tests never send garbage on purpose
        if len(query.question) != 1:
            return None
        question = query.question[0]
        with self._lock:
            self._queries.append(
                Query(
                    question.name.to_text(omit_final_dot=True).lower(),
                    dns.rdatatype.to_text(question.rdtype),
                    transport,
                )
            )
            fault = self._faults.get((question.name, question.rdtype))
            fault = fault or self._faults.get((question.name, None))
            zone = self._zone
        if fault is Fault.DROP:
            return None
        response = dns.message.make_response(query, recursion_available=True)
        response.flags |= dns.flags.AA
        if fault is Fault.SERVFAIL:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif fault is Fault.REFUSED:
            response.set_rcode(dns.rcode.REFUSED)
        elif fault is Fault.TRUNCATE and transport == "udp":
            response.flags |= dns.flags.TC
        else:
            _fill_answer(zone, question.name, question.rdtype, response)
        return _to_wire(query, response, transport)

    # -- plumbing --------------------------------------------------------------------------------

    def _run(self, udp: socket.socket, tcp: socket.socket) -> None:
        try:
            asyncio.run(self._serve(udp, tcp))
        except BaseException as exc:  # reported by start() if it happens before ready
            self._startup_error = exc
            self._ready.set()

    async def _serve(self, udp: socket.socket, tcp: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = asyncio.Event()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
        server = await asyncio.start_server(self._serve_tcp, sock=tcp)
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            transport.close()
            server.close()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                length = int.from_bytes(await reader.readexactly(2), "big")
                wire = self.respond(await reader.readexactly(length), "tcp")
                if wire is not None:
                    writer.write(len(wire).to_bytes(2, "big") + wire)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: DnsTestServer) -> None:
        self._server = server
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's selector transport does not subclass DatagramTransport, so no isinstance check.)
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        wire = self._server.respond(data, "udp")
        if wire is not None and self._transport is not None:
            self._transport.sendto(wire, addr)


def _bind_same_port(host: str) -> tuple[socket.socket, socket.socket]:
    """A UDP and a listening TCP socket on one OS-chosen port (retrying if TCP finds it taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        udp.bind((host, 0))
        tcp = socket.socket(family, socket.SOCK_STREAM)
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            tcp.bind((host, udp.getsockname()[1]))
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(16)
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp
    raise OSError(f"could not bind UDP and TCP to one port on {host}")


def _to_wire(query: dns.message.Message, response: dns.message.Message, transport: Transport) -> bytes:
    """Encode; over UDP an answer too big for the client's buffer becomes an empty one with TC set."""
    if transport == "tcp":
        return response.to_wire(max_size=65535)
    limit = max(query.payload, _UDP_LIMIT_WITHOUT_EDNS) if query.edns >= 0 else _UDP_LIMIT_WITHOUT_EDNS
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        truncated = dns.message.make_response(query, recursion_available=True)
        truncated.flags |= dns.flags.AA | dns.flags.TC
        return truncated.to_wire(max_size=limit)


def _fill_answer(
    zone: dns.zone.Zone, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, response: dns.message.Message
) -> None:
    """Answer as a recursive server whose whole world is ``zone``: follow CNAMEs, SOA when negative."""
    name = qname
    for _ in range(MAX_CHAIN):
        node = _find_node(zone, name)
        if node is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            _add_soa(zone, name, response)
            return
        found = node.get_rdataset(dns.rdataclass.IN, rdtype)
        if found is not None:
            response.answer.append(_rrset(name, found))
            return
        cname = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.CNAME)
        if cname is None or rdtype == dns.rdatatype.CNAME:
            _add_soa(zone, name, response)  # no data
            return
        response.answer.append(_rrset(name, cname))
        name = cname[0].target
    response.answer.clear()
    response.set_rcode(dns.rcode.SERVFAIL)


def _find_node(zone: dns.zone.Zone, name: dns.name.Name) -> dns.node.Node | None:
    """The node for ``name``: its own, an empty one if it is an empty non-terminal, or a wildcard's."""
    node = zone.get_node(name)
    if node is not None:
        return node
    if _has_descendant(zone.nodes, name):
        return _EMPTY_NODE
    # RFC 4592: only the wildcard child of the closest encloser (the nearest existing ancestor) applies.
    ancestor = name
    while ancestor != dns.name.root:
        ancestor = ancestor.parent()
        wildcard = zone.get_node(dns.name.Name((b"*", *ancestor.labels)))
        if wildcard is not None:
            return wildcard
        if zone.get_node(ancestor) is not None or _has_descendant(zone.nodes, ancestor):
            return None
    return None


def _has_descendant(names: Iterable[dns.name.Name], name: dns.name.Name) -> bool:
    return any(other != name and other.is_subdomain(name) for other in names)


def _add_soa(zone: dns.zone.Zone, name: dns.name.Name, response: dns.message.Message) -> None:
    """Put the SOA of the nearest enclosing zone (if the data has one) in the authority section."""
    while True:
        soa = zone.get_rdataset(name, dns.rdatatype.SOA)
        if soa is not None:
            response.authority.append(_rrset(name, soa))
            return
        if name == dns.name.root:
            return
        name = name.parent()


def _rrset(name: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))

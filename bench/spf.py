"""SPF evaluations per second over the RFC 7208 suite's scenarios, mailtoaster next to pyspf.

Both answer from the same in-memory zone data (pyspf through its DNSLookup hook), in one process,
one core. Run by hand from the repository root:

    .venv/bin/python bench/spf.py [--seconds N]

A figure to keep an eye on, not a test: nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import platform
import sys
import time
from pathlib import Path

# This file is named like pyspf's module: keep its folder off the path, and the repository on it.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tests.pyspf_oracle import pyspf_check  # noqa: E402
from tests.spfsuite import TESTDATA, SuiteCase, load_openspf  # noqa: E402

from mailtoaster.auth.spf import SpfOptions, check_spf  # noqa: E402


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def run_ours(cases: list[SuiteCase], seconds: float) -> tuple[float, dict[str, str]]:
    options = SpfOptions(default_explanation="DEFAULT", timestamp=lambda: 0)
    prepared = [(c, ipaddress.ip_address(c.ip)) for c in cases]

    async def one_pass() -> dict[str, str]:
        results = {}
        for case, ip in prepared:
            outcome = await check_spf(case.resolver, ip, case.mail_from, case.helo, options)
            results[case.id] = outcome.result.value
        return results

    async def timed() -> tuple[float, dict[str, str]]:
        results = await one_pass()
        evaluations, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            await one_pass()
            evaluations += len(prepared)
        return evaluations / (time.perf_counter() - start), results

    return asyncio.run(timed())


def run_pyspf(cases: list[SuiteCase], seconds: float) -> tuple[float, dict[str, str]]:
    def one_pass() -> dict[str, str]:
        return {case.id: pyspf_check(case.resolver, case.ip, case.mail_from, case.helo)[0] for case in cases}

    results = one_pass()
    evaluations, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        one_pass()
        evaluations += len(cases)
    return evaluations / (time.perf_counter() - start), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per implementation (default 3)")
    args = parser.parse_args()
    cases = load_openspf(TESTDATA / "spf" / "rfc7208-tests.yml")
    print(machine())
    print(f"{len(cases)} RFC 7208 scenarios, zone data in memory, one process\n")
    ours, our_results = run_ours(cases, args.seconds)
    try:
        theirs, their_results = run_pyspf(cases, args.seconds)
    except ImportError:
        theirs, their_results = 0.0, {}
    print(f"{'implementation':<20}{'evaluations/s':>15}{'suite cases right':>20}")
    for name, rate, results in (("mailtoaster", ours, our_results), ("pyspf", theirs, their_results)):
        right = sum(1 for c in cases if results.get(c.id) in c.results)
        shown = f"{rate:,.0f}" if rate else "not installed"
        print(f"{name:<20}{shown:>15}{f'{right}/{len(cases)}':>20}")


if __name__ == "__main__":
    main()

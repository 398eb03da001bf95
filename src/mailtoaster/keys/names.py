"""Checks for the DNS names the key store and the record generator accept.

Domains and selectors become directory and file names in the key store, so a name is accepted only if
it is made of ordinary DNS labels: that alone rules out ``..``, ``/``, empty labels and anything a
shell or a file system would treat specially.
"""

from __future__ import annotations

import re

_LDH_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_SERVICE_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
MAX_NAME_LENGTH = 253
"""Longest host name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets wire)."""


def check_dns_name(name: str, what: str, *, allow_underscore: bool = False, min_labels: int = 1) -> str:
    """Return ``name`` lower-cased, without a trailing dot, or raise ValueError naming ``what``.

    Labels are letters, digits and hyphens (RFC 1123 §2.1), not starting or ending with a hyphen;
    ``allow_underscore`` also admits the ``_spf``-style labels found in SPF include targets.
    Internationalised names must be given in their ASCII (``xn--``) form.
    """
    if not name or name.strip() != name:
        raise ValueError(f"invalid {what} {name!r}: empty or surrounded by white space")
    lowered = name.lower()
    if lowered.endswith(".") and lowered != ".":
        lowered = lowered[:-1]
    if len(lowered) > MAX_NAME_LENGTH:
        raise ValueError(f"invalid {what} {name!r}: longer than {MAX_NAME_LENGTH} characters")
    labels = lowered.split(".")
    pattern = _SERVICE_LABEL if allow_underscore else _LDH_LABEL
    for label in labels:
        if not pattern.fullmatch(label):
            raise ValueError(f"invalid {what} {name!r}: {_label_problem(label)}")
    if len(labels) < min_labels:
        raise ValueError(f"invalid {what} {name!r}: needs at least {min_labels} labels (like example.com)")
    return lowered


def _label_problem(label: str) -> str:
    if not label:
        return "empty label (two dots in a row, or a leading dot)"
    if len(label) > 63:
        return f"label {label[:20]!r}... is longer than 63 characters"
    return f"label {label!r} must be letters, digits and inner hyphens only"


def validate_domain(domain: str) -> str:
    """A mail domain such as ``example.com``: two or more letter-digit-hyphen labels, normalised."""
    return check_dns_name(domain, "domain", min_labels=2)


def validate_selector(selector: str) -> str:
    """A DKIM selector (RFC 6376 §3.1): one or more letter-digit-hyphen labels, normalised.

    Dotted selectors (``2024.eng``) are legal DKIM; the key file is then named ``2024.eng``.
    """
    return check_dns_name(selector, "selector")

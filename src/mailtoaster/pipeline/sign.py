"""Signing relayed mail: DKIM with every key the author domain has in the key store, and DomainKeys
when the configuration or the client's DKSIGN rule asks for it (qmail-dk's behaviour).

A message whose author domain has no key is sent unsigned, and one the signer refuses (no From, a
From domain the key may not sign for) too: an unsigned message is still mail, and the log says why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mailtoaster.auth.author import find_authors
from mailtoaster.auth.dkim import DkimSigner, SigningError
from mailtoaster.auth.dkim.sign import sign_dkim_parsed
from mailtoaster.auth.domainkeys import DomainKeysSignError
from mailtoaster.auth.domainkeys.sign import sign_domainkeys_parsed
from mailtoaster.keys import KeyStoreError, StoredKey, list_keys
from mailtoaster.keys.store import load_private_key
from mailtoaster.message import Message
from mailtoaster.policy import ClientPolicy, dksign_key

log = logging.getLogger("mailtoaster.smtp")


@dataclass(frozen=True)
class SigningConfig:
    keys_dir: Path
    dkim: bool = True
    domainkeys: bool = False


class KeyStoreSigner:
    def __init__(self, config: SigningConfig) -> None:
        self._config = config

    def signature_fields(self, message: Message, policy: ClientPolicy) -> bytes:
        domain = find_authors(message).domain
        if domain is None:
            log.info("not signed: no single author domain in From")
            return b""
        try:
            keys = list_keys(self._config.keys_dir, domain)
        except (KeyStoreError, ValueError, OSError) as error:
            log.warning("not signed: key store for %s unreadable: %s", domain, error)
            return b""
        domainkeys = self._domainkeys_field(message, domain, keys, policy)
        if not (self._config.dkim and keys):
            return domainkeys
        signers = [DkimSigner(domain, key.selector, key.private_key) for key in keys]
        try:
            return b"".join(sign_dkim_parsed(message.with_fields_on_top(domainkeys), signers)) + domainkeys
        except SigningError as error:
            log.info("not DKIM-signed (d=%s): %s", domain, error)
            return domainkeys

    def _domainkeys_field(
        self, message: Message, domain: str, keys: list[StoredKey], policy: ClientPolicy
    ) -> bytes:
        """DomainKeys covers only the fields below it, so it is made first and DKIM signs over it."""
        chosen = self._domainkeys_key(domain, keys, policy)
        if chosen is None:
            return b""
        selector, private_key = chosen
        try:
            return sign_domainkeys_parsed(message, domain, selector, private_key)
        except DomainKeysSignError as error:
            log.info("not DomainKeys-signed (d=%s): %s", domain, error)
            return b""

    def _domainkeys_key(
        self, domain: str, keys: list[StoredKey], policy: ClientPolicy
    ) -> tuple[str, rsa.RSAPrivateKey] | None:
        if policy.dksign:
            found = dksign_key(policy.dksign, domain, self._config.keys_dir)
            if found is None:
                return None  # qmail-dk: no key file after % substitution means "don't sign"
            selector, path = found
            key = load_private_key(path)
            return (selector, key) if isinstance(key, rsa.RSAPrivateKey) else None
        if self._config.domainkeys:
            rsa_keys = [key for key in keys if isinstance(key.private_key, rsa.RSAPrivateKey)]
            if rsa_keys:
                assert isinstance(rsa_keys[0].private_key, rsa.RSAPrivateKey)
                return rsa_keys[0].selector, rsa_keys[0].private_key
        return None

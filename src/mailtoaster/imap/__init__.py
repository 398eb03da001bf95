"""The IMAP4rev1 server (RFC 3501 and the extensions clients expect) over the Maildir++ store.

Protocol code here never touches sockets or files: :mod:`.parser` turns command bytes into typed commands,
:mod:`.search` evaluates SEARCH criteria, :mod:`.fetch` renders FETCH items from message bytes, and the
session and server modules wire them to the store (``mailtoaster.store``) and to the spam learner.
"""

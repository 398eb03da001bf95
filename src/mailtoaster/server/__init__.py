"""The mail server process: :class:`MailServer` wires configuration, listeners, the pipeline and the
queue runner together (:mod:`.app`); :mod:`.tls` provides its certificate."""

from mailtoaster.server.app import MailServer, StartupError

__all__ = ["MailServer", "StartupError"]

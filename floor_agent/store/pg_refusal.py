"""Whether a failed connection to PostgreSQL was refused or found no server able to take it.

A collector waits out a database that is away (stopped, starting, shutting down, a standby not
yet promoted, a host that does not answer): that ends by itself. It must not wait out one that
answered and said no (a wrong password, a role or database that does not exist, no pg_hba
entry, SSL the server will not speak): that is a configuration error nobody will see while
the collector sits waiting for it. libpq gives no SQLSTATE for a failed connect, only its
text, so this reads the text: the server's FATAL lines (PostgreSQL's English messages; a
server with another lc_messages has its refusals read as "away", and the reason is in the
log line and on /healthz). Pure: the message in, the judgement out.
"""

from __future__ import annotations

import re

# FATAL messages that say "not now": starting up, shutting down, in recovery, not yet or not
# accepting connections (57P03), out of connection slots (53300), out of resources
NOT_NOW = ("the database system is", "too many clients", "remaining connection slots",
           "could not fork", "out of memory", "terminating connection")

# client-side refusals: libpq would not go on with what the server offered
CLIENT_REFUSALS = ("fe_sendauth", "does not support SSL", "certificate verify failed",
                   "authentication method", "SCRAM")

FATAL = re.compile(r"FATAL:\s+(.*)")


def refused(message: str) -> bool:
    """True when the server answered and refused the connection (or libpq refused what it
    offered): waiting will not fix it. False when no server could take it now: refused or
    timed-out TCP, an unknown host name, a server starting or stopping, only standbys
    answering a read-write URL."""
    for reason in FATAL.findall(message):
        if not any(phrase in reason for phrase in NOT_NOW):
            return True
    return any(marker in message for marker in CLIENT_REFUSALS)

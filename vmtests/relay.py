"""QEMU guestfwd helper: one guest TCP connection on stdin/stdout <-> 127.0.0.1:PORT.

QEMU spawns it once per connection the guest opens to its collector address, so the guest's
configuration never names the host's (per-run) port.
"""

import os
import selectors
import socket
import sys


def main() -> None:
    upstream = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ)
    selector.register(upstream, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fileobj == 0:
                data = os.read(0, 65536)
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    selector.unregister(0)
                    continue
                upstream.sendall(data)
            else:
                data = upstream.recv(65536)
                if not data:
                    return
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view):]


main()

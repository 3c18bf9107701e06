"""One guest connection relayed to the host's 127.0.0.1:PORT (argv[1]), for tests/vm.py.

QEMU's `guestfwd=…-cmd:COMMAND` runs COMMAND for each connection the guest opens, with the
connection as stdin and stdout. The other form, `…-tcp:HOST:PORT`, is a character device
that connects once when QEMU starts and carries a single connection: a registry would
have closed it as idle long before the guest's first request. Standard library only, so
it starts fast and needs nothing of the test suite.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def main() -> None:
    port = int(sys.argv[1])
    with socket.create_connection(("127.0.0.1", port)) as upstream:
        selector = selectors.DefaultSelector()
        selector.register(0, selectors.EVENT_READ, "guest")
        selector.register(upstream, selectors.EVENT_READ, "host")
        while True:
            for key, _ in selector.select():
                if key.data == "guest":
                    data = os.read(0, 65536)
                    if not data:  # the guest is done sending; the answer may still come
                        selector.unregister(0)
                        upstream.shutdown(socket.SHUT_WR)
                        continue
                    upstream.sendall(data)
                else:
                    data = upstream.recv(65536)
                    if not data:
                        return
                    _write_all(1, data)


if __name__ == "__main__":
    main()

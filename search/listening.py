"""Whether this process may listen on an address: asked before a server (the dashboard, the
proxy) starts, so that a port in use or a wrong host is one line, not a server's traceback."""

from __future__ import annotations

import errno
import socket

from search.errors import UserError


def check_address(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go.

    Raises:
        UserError: the host is unknown or not this machine's, the port is in use or not
            allowed for this user.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # as servers bind: a port whose last server has just ended (its connections in
        # TIME_WAIT) is free; one a server listens on is not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as exc:
            raise UserError(f"--host {host}: no such host ({exc.strerror})") from None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"address {host}:{port} is in use; pick another with --port"
                                ) from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host}: not an address of this machine; pick one of "
                                "its own with --host (0.0.0.0: all of them)") from None
            if exc.errno == errno.EACCES:
                raise UserError(f"--port {port}: not allowed for this user (ports below 1024 "
                                "need root); pick another with --port") from None
            raise UserError(f"address {host}:{port} cannot be used ({exc.strerror})") from None

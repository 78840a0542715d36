"""Entry point of the session process: ``python -m tui`` with the broker socket's fd in BASTION_RPC_FD.

It runs sandboxed and can write nowhere but its own home, so its log records go to the daemon over the broker
channel (``log``), which writes them to the daemon's log under the operator's name.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from bastion.rpc.proto import RpcClient


class BrokerLogHandler(logging.Handler):
    """Log records go to the daemon as ``log`` requests (never to stderr: Textual draws on it)."""

    def __init__(self, rpc: RpcClient):
        super().__init__(logging.INFO)
        self.rpc = rpc

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.rpc.send("log", level=record.levelname, message=self.format(record)[:4000])
        except Exception:  # logging must never take the menu down
            self.handleError(record)


def main() -> int:
    fd = os.environ.pop("BASTION_RPC_FD", "")
    if not fd.isdigit():
        print("bastion session process: no broker channel (BASTION_RPC_FD)", file=sys.stderr)
        return 2
    from tui.app import MenuApp

    rpc = RpcClient(socket.socket(fileno=int(fd)))
    logging.basicConfig(level=logging.INFO, handlers=[BrokerLogHandler(rpc)], format="%(name)s: %(message)s")
    app = MenuApp(rpc)
    try:
        app.run()
    except Exception:
        logging.getLogger("tui").exception("the menu failed")
        raise
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())

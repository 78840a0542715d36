"""Entry point of the session process: ``python -m tui`` with the broker socket's fd in BASTION_RPC_FD."""

from __future__ import annotations

import logging
import os
import socket
import sys


def main() -> int:
    fd = os.environ.pop("BASTION_RPC_FD", "")
    log_path = os.environ.pop("BASTION_TUI_LOG", "")
    if log_path:  # never stderr: Textual draws on it
        logging.basicConfig(filename=log_path, level=logging.INFO,
                            format="%(asctime)s tui[%(process)d] %(levelname)s %(message)s")
    if not fd.isdigit():
        print("bastion session process: no broker channel (BASTION_RPC_FD)", file=sys.stderr)
        return 2
    from bastion.rpcproto import RpcClient
    from tui.app import MenuApp

    rpc = RpcClient(socket.socket(fileno=int(fd)))
    app = MenuApp(rpc)
    app.run()
    return app.return_code or 0


if __name__ == "__main__":
    sys.exit(main())

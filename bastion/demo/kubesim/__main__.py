"""``python -m bastion.demo.kubesim --dir D [--port N]``."""

from bastion.demo.kubesim.server import main

raise SystemExit(main())

"""What every test process starts from, however the suite itself was started.

A suite started in the background by a non-interactive shell (``scripts/test &``, as a CI runner may) inherits
SIGINT and SIGQUIT ignored, and nohup adds SIGHUP. Ignored signals survive exec, so every program a test starts
would ignore them too: the stock ssh client keeps an ignored SIGINT ignored (Ctrl-C on a non-interactive ssh did
nothing, and a test of a requester hanging up waited forever), and Python installs no KeyboardInterrupt handler.
The tests mean the signals a login shell gives, so the defaults are put back before any test runs.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
for _sig in (signal.SIGQUIT, signal.SIGHUP):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, signal.SIG_DFL)

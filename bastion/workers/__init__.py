"""One process per SSH connection (``processes: per-connection``): the supervisor accepts and forks, each
connection runs in a process of its own, and a node process keeps the books. They talk over the hub."""

"""Audit events out: every audit event, with its chain position and hash, as a JSON line to a size-rotated file,
syslog (RFC 5424 over TCP or UDP) and the systemd journal (docs/audit-export.md).

The audit chain is the outbox: its ``seq`` has no gaps and is committed in order (the head row is locked by
each append), so a sink's progress is one number. :mod:`~bastion.export.schema` turns an event into the versioned
JSON line; :mod:`~bastion.export.filesink`, :mod:`~bastion.export.syslog` and :mod:`~bastion.export.journal` send
lines; :mod:`~bastion.export.cursor` keeps each sink's cursor and its lease in the store (one exporter per sink
across the nodes sharing it); :mod:`~bastion.export.worker` is the per-node loop and
:mod:`~bastion.export.replay` what ``bastion audit export`` does.
"""

"""Notifications: webhooks, Slack and email told of requests, decisions, terminations and blocks
(docs/notifications.md).

:mod:`~bastion.notify.events` turns audit events into notifications and writes them to the store's outbox in the
audit event's own transaction; :mod:`~bastion.notify.worker` delivers them in the background (one loop per node,
rows claimed with a lease, so nodes sharing a store deliver each once); :mod:`~bastion.notify.formats` renders
what each kind of target is sent and :mod:`~bastion.notify.send` sends it; :mod:`~bastion.notify.outbox` holds
the row operations and the counts ``bastion notify status`` prints.
"""

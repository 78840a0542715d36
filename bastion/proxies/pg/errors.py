"""Scrubbing the server's errors and notices, which can echo the values that masking hides.

``invalid input syntax for type integer: "123-45-6789"`` or ``Key (ssn)=(...) already exists``: a statement can
make the server put a masked value into an error message, so masking the DataRows alone would not be enough.
"""

from __future__ import annotations

from bastion.proxies.pg.masking import MaskRule
from bastion.proxies.pg.protocol import parse_error

KEPT_FIELDS = "SVCPFLRstcdn"  # severity, SQLSTATE, position, source location, schema/table/column/type/constraint
WITHHELD_TEXT = "(withheld by the bastion: it may contain masked values)"


def _encode(fields: dict[str, str]) -> bytes:
    return b"".join(k.encode() + v.encode() + b"\x00" for k, v in fields.items()) + b"\x00"


def scrub(payload: bytes, masking: list[MaskRule], reads: bool) -> bytes:
    """The payload of an ErrorResponse or NoticeResponse as the client may see it. While a statement that reads
    masked data runs (``reads``), every field that can carry a value is withheld (the SQLSTATE stays); otherwise
    detail, context and message that name a masked column are."""
    fields = parse_error(payload)
    if reads:
        cols = ", ".join(sorted({r.column for r in masking}))
        kept = {k: v for k, v in fields.items() if k in KEPT_FIELDS}
        kept["M"] = (f"bastion: the server's message is withheld: the statement reads masked columns ({cols}); "
                     f"SQLSTATE {fields.get('C', '?')}")
        return _encode(kept)
    names = {r.column.lower() for r in masking}
    text = " ".join(fields.values()).lower()
    if not any(n in text for n in names):
        return payload
    for k in ("D", "W", "M"):
        if k in fields and any(n in fields[k].lower() for n in names):
            fields[k] = WITHHELD_TEXT
    return _encode(fields)

"""The polling side of the device authorization grant (RFC 8628 §3.4-3.5), kept free of I/O for tests.

``authorization_pending``: poll again after ``interval``; ``slow_down``: add 5 s to the interval for good;
a transport error or a 5xx: back off exponentially (capped), without ever polling faster than ``interval``;
``access_denied``, ``expired_token`` and any other error end the flow; so does the code's own expiry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SLOW_DOWN_STEP = 5.0
MAX_BACKOFF = 60.0


class DeviceFlowError(Exception):
    """The flow ended without a token; ``code`` is the OAuth error (or ``timeout``), ``message`` for the user."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


MESSAGES = {
    "access_denied": "the sign-in was declined at the identity provider",
    "expired_token": "the code expired before the sign-in was completed",
    "timeout": "the sign-in was not completed in time",
}


@dataclass
class PollSchedule:
    """When to poll next, given what the token endpoint said."""

    interval: float = 5.0
    expires_at: float = 0.0  # monotonic deadline of the device code (and of our own login timeout)
    failures: int = 0
    history: list[str] = field(default_factory=list)

    def next_delay(self, outcome: str) -> float:
        """Seconds to wait after ``outcome`` (``pending``, ``slow_down`` or ``transient``); raises when it is over."""
        self.history.append(outcome)
        if outcome == "slow_down":
            self.interval += SLOW_DOWN_STEP
            self.failures = 0
            return self.interval
        if outcome == "transient":
            self.failures += 1
            return min(MAX_BACKOFF, max(self.interval, self.interval * 2 ** (self.failures - 1)))
        self.failures = 0
        return self.interval

    def check(self, now: float) -> None:
        """Raise DeviceFlowError once the deadline has passed."""
        if self.expires_at and now >= self.expires_at:
            raise DeviceFlowError("timeout", MESSAGES["timeout"])

    @staticmethod
    def terminal(error: str, description: str = "") -> DeviceFlowError:
        """The error that ends the flow for an OAuth ``error`` other than pending/slow_down."""
        msg = MESSAGES.get(error) or f"the identity provider refused the sign-in ({error})"
        return DeviceFlowError(error, msg)

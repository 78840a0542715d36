"""Target endpoints opened by the daemon."""

"""Test infrastructure: real sshd targets, key pairs, a pty terminal with a pyte screen."""

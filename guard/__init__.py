"""bastion-guard: the supervisor that runs a session on an SSH target and has the bastion judge every exec."""

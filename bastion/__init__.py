"""bastion package."""

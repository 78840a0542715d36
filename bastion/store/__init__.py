"""bastion/store package."""

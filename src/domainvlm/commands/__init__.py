"""Sub-commands of the `domainvlm` CLI, one module each (see domainvlm.cli)."""

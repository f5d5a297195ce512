"""The classify domain's own sub-commands (found by cli.py like domainvlm/commands)."""

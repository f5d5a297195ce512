"""The wafer domain's own sub-commands (found by cli.py like domainvlm/commands)."""

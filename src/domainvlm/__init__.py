"""domainvlm: labelled images -> fine-tuned expert VLM -> measured evaluation -> chat, API, web UI."""

__version__ = "0.1.0"

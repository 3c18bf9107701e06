"""Build, sign and publish systemd system extensions."""

__version__ = "0.1.0"

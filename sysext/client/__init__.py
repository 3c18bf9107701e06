"""Talking to a registry over HTTP: the API client and publishing (upload only what the
registry lacks). Imports core, systemd, trust.
"""

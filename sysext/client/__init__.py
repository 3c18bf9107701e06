"""Reading and writing registries over HTTP: the API client, publishing (upload only what the
registry lacks) and the checker that reads a served directory the way systemd-sysupdate
does. Imports core, systemd and trust.
"""

"""Booting extensions under a real systemd: a cached Debian root, a throw-away
systemd-nspawn container over it, and a report of what the boot did with each extension
(`sysext try`, and the booted tests)."""

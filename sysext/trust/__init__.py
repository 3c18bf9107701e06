"""OpenPGP signing and verification of SHA256SUMS (pysequoia; gpg for signatures that expire).
Imports core and systemd.
"""

"""OpenPGP signing and verification of SHA256SUMS (pysequoia, gpg for expiring signatures).
Imports core.
"""

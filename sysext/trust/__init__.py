"""OpenPGP signing and verification of SHA256SUMS (pysequoia; gpg for signatures that expire),
and X.509 certificates with PKCS#7 signatures of verity root hashes (x509). Imports core
and systemd.
"""

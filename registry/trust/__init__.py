"""The registry's signing keys: creation, rotation phases, and the signer. Imports
sysext.trust.
"""

"""The registry's signing keys: creation, rotation phases, and the signer; the verity
certificates it trusts (verity). Imports sysext.trust.
"""

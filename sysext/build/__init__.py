"""Recipe to image: sources (download, verify, cache, lock), upstream versions and signatures,
extraction, staging, packing, provenance and whole-catalogue (matrix) builds. Imports core,
recipe, systemd, image, trust.
"""

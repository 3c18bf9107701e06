"""Recipe to image: sources (download, verify, cache, lock), upstream versions and signatures,
extraction, assembly, packing (pack.py), provenance, build keys and whole-catalogue (matrix)
builds. Imports core, recipe, systemd, image, trust and client (to publish).
"""

"""What systemd defines, as pure functions where possible: version ordering, patterns,
SHA256SUMS manifests, selection, transfer files, extension-release and os-release,
architectures, image lint, and the sysupdate-style checker. Imports core (and image for
reading images).
"""

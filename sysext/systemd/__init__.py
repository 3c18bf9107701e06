"""What systemd defines, as pure functions over strings and bytes: version ordering, patterns,
SHA256SUMS manifests, selection, transfer files, extension-release and os-release,
architectures. Imports only core.
"""

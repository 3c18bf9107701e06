"""The image file itself: packing a staged tree into squashfs or erofs (formats/) and reading
one back (read, summary). Imports core and systemd.
"""

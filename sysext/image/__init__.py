"""The image itself: the staged tree it is made of (staging), writing it as squashfs or erofs
and reading one back (formats/, read, summary), and the lint that says whether systemd-
sysext would accept it. Imports core and systemd.
"""

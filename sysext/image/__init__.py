"""The image itself: the staged tree it is made of (staging), writing it as squashfs or erofs
and reading one back (formats/, read, summary), signed dm-verity disk images around it
(verity, ddi), and the lint that says whether systemd-sysext would accept it. Imports core
and systemd.
"""

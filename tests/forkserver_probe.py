"""Prints what a process inherits from whoever started it, for tests/test_forkserver.py."""

import os
import sys
import time

if __name__ == "__main__":
    mask = os.umask(0)
    print("zone", time.strftime("%z", time.localtime(0)))
    print("umask", oct(mask))
    print("cwd", os.getcwd())
    print("argv", sys.argv[1:])
    print("stdin", sys.stdin.read().strip())
    print("stdout buffered", not sys.stdout.line_buffering)
    print("stderr line-buffered", sys.stderr.line_buffering)
    print("path[0]", sys.path[0])

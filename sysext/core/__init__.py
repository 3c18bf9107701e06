"""Plumbing every stage shares: the error type, the one subprocess wrapper, atomic files, named
steps, durations, settings and URL layout. Imports nothing else of sysext.
"""

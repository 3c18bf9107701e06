"""Plumbing every stage shares: the error type with hints, the one subprocess wrapper, atomic
files, named steps, durations, user settings, mirror rules, HTTP downloads, the
registry's URL layout and escaped log fields. Imports nothing else of sysext.
"""

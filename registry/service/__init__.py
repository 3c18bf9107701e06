"""The domain: publish, yank, promote and start-up (core.py, the one write path),
authorization, the audit trail, name rules, upload validation, and the consistency check
with repair. Imports storage, db and trust; never http.
"""

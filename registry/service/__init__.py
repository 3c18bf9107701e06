"""The domain: publish, yank, promote and start-up (core), authorization, the audit trail, name
rules, upload validation and the consistency check. One write path. Imports store, public,
trust; never http.
"""

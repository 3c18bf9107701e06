"""The HTTP surface: the ASGI app, the JSON API, the catalogue pages, provisioning and key
routes, the connection guard, access logs, the fast path serving the public tree, and the
nginx templates that can serve it instead. Imports service, storage, db and trust.
"""

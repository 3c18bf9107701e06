"""The HTTP surface: the ASGI app, the JSON API, the catalogue pages, provisioning and key
routes, the connection guard, access logs and the fast path serving the public tree. Imports
service, store, public, trust.
"""

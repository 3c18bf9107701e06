"""Storage: database models and migrations, writer locking, the content-addressed blob store
and the storage backends (local files, S3). Imports trust and public only for what backends
materialize.
"""

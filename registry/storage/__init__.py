"""Where bytes live: the content-addressed blob store, the public tree's layout, what each
channel directory contains (materialize) and the backends that write it (a local
directory, or an S3 bucket). Imports registry.db for the image rows and registry.trust to
sign manifests; never http or service.
"""

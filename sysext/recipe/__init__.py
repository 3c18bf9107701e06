"""The recipe format: the model a recipe file becomes, its schema and the generated docs.
Imports sysext.core and sysext.systemd.
"""

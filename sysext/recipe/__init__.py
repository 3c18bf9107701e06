"""The recipe format, declared once: the models a recipe file becomes (model), the value
types of its keys (values) and the reference generated from the models (docs). Imports
core and systemd; looks source kinds up in build.sources (plug-ins) only when a recipe is
checked.
"""

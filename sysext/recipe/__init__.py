"""The recipe format: the model a recipe file becomes, its schema and the generated reference
docs. Imports core and systemd; looks source kinds up in build.sources (plug-ins) only when
a recipe is checked.
"""

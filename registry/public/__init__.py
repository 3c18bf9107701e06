"""The signed public tree: where each file lives (layout), materializing a channel's directory
atomically, and the nginx templates that serve it. Imports store models and trust.
"""

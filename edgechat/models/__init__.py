"""Getting and keeping model files: the local registry, hub pulls and verification, the hub
token.
"""

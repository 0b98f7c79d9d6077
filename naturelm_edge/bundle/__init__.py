"""Bundles: manifest with hashes, verification, ed25519 signatures."""

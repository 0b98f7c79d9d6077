"""The escalation wire contract: the JSON schema, the device's client and a loopback server speaking it.

Both the device (``edge_runtime``) and the full-model server (``serve``) import this package, so neither
depends on the other.
"""

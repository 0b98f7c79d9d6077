"""The project's test bed, shared by ``tests/`` and ``benchmarks/`` (neither imports the other).

Real parts on loopback (an OpenSSH server, ``edge serve`` in its own process, free ports), the reference
recordings' constants (held-out folders, call-free clips, the question the tiny teachers learn) and the
measures both the gate tests and the gate benchmark compute on hand-drawn annotations.
"""

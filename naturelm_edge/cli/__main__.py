"""``python -m naturelm_edge.cli``: the ``edge`` command where no console script is installed (a flashed device)."""

from naturelm_edge.cli import run

run()

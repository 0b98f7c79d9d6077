"""What every benchmark script shares: the plotting backend, a description of the machine, how results are written."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path


def pyplot():  # noqa: ANN201 - matplotlib.pyplot, or None without the dev extra
    """matplotlib's pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def recordings_dir(given: Path | None) -> Path:
    """``--audio``, else the shared recordings beside the checkout; a clear exit when there are none."""
    from naturelm_edge.sample_data import shared_audio_dir

    audio = given or shared_audio_dir()
    if audio is None:
        raise SystemExit("no recordings: give --audio or put the shared folder beside the checkout")
    return audio


def machine() -> dict:
    import numpy as np
    import onnxruntime

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"machine": platform.machine(), "processor": cpu, "cores": os.cpu_count(),
            "python": platform.python_version(), "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def write_results(out: Path, name: str, report: dict, markdown: Callable[[dict], str],
                  plot: Callable[[dict, Path], None]) -> None:
    """``OUT/NAME.json``, ``.md`` and ``.png`` of a report, and the Markdown printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (out / f"{name}.md").write_text(text if text.endswith("\n") else text + "\n")
    plot(report, out / f"{name}.png")
    print(text)

"""torch -> ONNX for any model role, driven by an :class:`ExportSpec` (one per role, as optimum does)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from naturelm_edge.errors import ExportError

DEFAULT_OPSET = 17


@dataclass
class ExportSpec:
    """What one exported graph looks like: names, dynamic axes, example inputs, metadata."""

    role: str
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    example_inputs: Callable[[], tuple[torch.Tensor, ...]]
    opset: int = DEFAULT_OPSET
    metadata: dict[str, str] = field(default_factory=dict)


def export_module(module: torch.nn.Module, spec: ExportSpec, path: Path) -> float:
    """Export ``module`` to ``path`` (TorchScript exporter, constant folding); return seconds taken."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # constants (bucket table) are intended
            torch.onnx.export(
                module,
                spec.example_inputs(),
                str(path),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=spec.dynamic_axes,
                opset_version=spec.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as err:  # noqa: BLE001 - exporter failures come in many types
        raise ExportError(f"{path}: ONNX export of the {spec.role} failed ({type(err).__name__}: {err}).") from err
    if spec.metadata:
        model = onnx.load(str(path), load_external_data=False)
        for key, value in spec.metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(path))
    return time.perf_counter() - start

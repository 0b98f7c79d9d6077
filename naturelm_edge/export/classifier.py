"""A classifier student as the bundle's encoder graph: fbank (batch, frames, mel bins) -> logits (batch, labels)."""

from __future__ import annotations

from pathlib import Path

from naturelm_edge.bundle.contract import AudioContract


def export_classifier(net, path: Path, audio: AudioContract, teacher: str) -> None:  # noqa: ANN001 - torch module
    import torch

    from naturelm_edge.bundle import roles
    from naturelm_edge.export.onnx_export import ExportSpec, export_module

    example = torch.zeros(1, audio.frames, audio.fbank.num_mel_bins)
    export_module(net, ExportSpec(
        role=roles.ENCODER.name, input_names=["fbank"], output_names=["logits"],
        dynamic_axes={"fbank": {0: "batch"}, "logits": {0: "batch"}}, example_inputs=lambda: (example,),
        metadata={"naturelm_edge.role": roles.ENCODER.name, "naturelm_edge.encoder": "student",
                  "naturelm_edge.answers": roles.SCORES, "naturelm_edge.teacher": teacher}), path)

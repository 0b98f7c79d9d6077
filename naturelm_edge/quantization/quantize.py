"""Quantize one model role with onnxruntime's tools: int8 static (QDQ), int8 dynamic, fp16, int4.

Defaults that keep accuracy: only MatMul/Gemm/Conv with a weight are quantized; LayerNorm, Softmax,
residual Adds and the activation-by-activation MatMuls of attention stay in float. Static int8 is QDQ with
per-channel weights; the activation type follows the target (TensorRT needs symmetric int8 on both sides,
x86 CPUs are fastest with uint8 activations, ARM with int8). Calibration ranges are cached by model,
calibration data and method, so quantizing again for another target reuses them.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import onnx

from naturelm_edge.atomic import atomic_path
from naturelm_edge.errors import EdgeError
from naturelm_edge.hashing import sha256_file
from naturelm_edge.quantization.calibration import ArrayReader

MODES = ("fp32", "fp16", "int8-static", "int8-dynamic", "int4")
WEIGHT_OPS = ("MatMul", "Gemm", "Conv")


class QuantizationError(EdgeError):
    """A model that cannot be quantized as asked."""


@dataclass(frozen=True)
class QuantSpec:
    mode: str
    target: str = "x86"  # x86 | arm | tensorrt
    method: str = "minmax"  # minmax | entropy | percentile
    per_channel: bool = True
    keep_attention_float: bool = True
    int4_block: int = 32

    def label(self) -> str:
        if self.mode == "int8-static":
            return f"int8-static-{self.target}-{self.method}"
        return self.mode


def activation_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose inputs are both activations (attention scores and context)."""
    constants = {init.name for init in model.graph.initializer}
    constants |= {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and not any(i in constants for i in n.input)]


def quantize(fp32: Path, out: Path, spec: QuantSpec, reader: ArrayReader | None = None,
             cache_dir: Path | None = None, calibration_digest: str = "") -> dict:
    """Write the ``spec.mode`` version of ``fp32`` to ``out`` (atomically); return what was done."""
    if spec.mode not in MODES:
        raise QuantizationError(f"unknown precision '{spec.mode}'; choose one of {', '.join(MODES)}.")
    try:
        onnx.checker.check_model(str(fp32))
    except (onnx.checker.ValidationError, OSError, ValueError) as err:
        raise QuantizationError(f"{fp32}: not a readable ONNX model ({str(err).splitlines()[0][:120]}).") from err
    out.parent.mkdir(parents=True, exist_ok=True)
    info: dict = {"spec": asdict(spec), "label": spec.label()}
    with tempfile.TemporaryDirectory(prefix="nle-quant-") as work_dir:
        work = Path(work_dir)
        staged = work / "model.onnx"
        if spec.mode == "fp32":
            shutil.copy2(fp32, staged)  # the raw export: the pre-processed fp32 model fails at EXTENDED level
        elif spec.mode == "fp16":
            from onnxruntime.transformers.onnx_model import OnnxModel

            model = OnnxModel(onnx.load(str(fp32)))
            model.convert_float_to_float16(keep_io_types=True)  # converts, then sorts the graph topologically
            model.save_model_to_file(str(staged))
        elif spec.mode == "int4":
            from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

            quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=spec.int4_block, is_symmetric=True,
                                             accuracy_level=4)
            quantizer.process()
            quantizer.model.save_model_to_file(str(staged))
        else:
            pre = work / "pre.onnx"
            from onnxruntime.quantization.shape_inference import quant_pre_process

            # shape inference only: the optimizer would fold table[buckets] into a (heads, 496, 496) float
            # constant that int8 cannot shrink (11.8 MB of the official encoder); onnxruntime folds it in memory
            quant_pre_process(str(fp32), str(pre), skip_optimization=True, skip_symbolic_shape=True)
            exclude = activation_matmuls(onnx.load(str(pre))) if spec.keep_attention_float else []
            info["kept_float"] = len(exclude)
            if spec.mode == "int8-dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(pre), str(staged), op_types_to_quantize=["MatMul", "Gemm"],
                                 weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
            else:
                info.update(_static(pre, staged, spec, exclude, reader, cache_dir, calibration_digest))
        onnx.checker.check_model(str(staged))
        with atomic_path(out) as tmp:
            shutil.move(str(staged), tmp)
    info["bytes"] = out.stat().st_size
    return info


def _static(pre: Path, out: Path, spec: QuantSpec, exclude: list[str], reader: ArrayReader | None,
            cache_dir: Path | None, digest: str) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if spec.method not in methods:
        raise QuantizationError(f"unknown calibration method '{spec.method}'; choose minmax, entropy or percentile.")
    cache = None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = cache_dir / f"ranges-{sha256_file(pre)[:16]}-{digest}-{spec.method}.json"
    hit = cache is not None and cache.is_file()
    if reader is None and not hit:
        raise QuantizationError("static int8 needs calibration data and none was given.")
    activation = QuantType.QUInt8 if spec.target == "x86" else QuantType.QInt8
    symmetric = spec.target == "tensorrt"
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    if spec.method == "percentile":
        extra["CalibPercentile"] = 99.99
    quantize_static(str(pre), str(out), None if hit else reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(WEIGHT_OPS), per_channel=spec.per_channel,
                    activation_type=activation, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    calibrate_method=methods[spec.method], extra_options=extra,
                    calibration_cache_path=str(cache) if cache else None)
    return {"calibration_cache": str(cache) if cache else None, "calibration_cache_hit": hit,
            "activation_type": "uint8" if activation == QuantType.QUInt8 else "int8", "symmetric_activations": symmetric}

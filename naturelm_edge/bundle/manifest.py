"""Bundle manifests: what a device needs to know, with a hash for every file.

``manifest.json`` (schema version 1): ``schema_version``, ``bundle_id``, ``created``, ``toolkit_version``,
``source_checkpoint`` {id, sha256}, ``target_profile``, ``files`` [{path, role, precision, sha256, bytes,
inputs, outputs}], ``audio`` {sample_rate, window_s, hop_s, clip_seconds, time_expansion, fbank},
``tokenizer``, ``prompts`` {template, tasks}, ``labels``, ``calibration``, ``reports``, ``signature``.
Loading verifies the schema version and every hash before any model is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from naturelm_edge._version import __version__
from naturelm_edge.atomic import atomic_path
from naturelm_edge.bundle import roles
from naturelm_edge.bundle.contract import (
    BundleError,
)
from naturelm_edge.hashing import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def onnx_io(path: Path) -> tuple[list[dict], list[dict]]:
    """Input and output names, shapes and types of an ONNX graph (without loading its weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> list[dict]:
        out = []
        for v in values:
            dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            out.append({"name": v.name, "shape": dims, "dtype": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()})
        return out

    return describe(model.graph.input), describe(model.graph.output)


def file_entry(root: Path, relative: str, role: roles.Role, precision: str | None = None) -> dict:
    path = root / relative
    entry = {"path": relative, "role": role.name, "precision": precision, "sha256": sha256_file(path),
             "bytes": path.stat().st_size}
    if relative.endswith(".onnx"):
        entry["inputs"], entry["outputs"] = onnx_io(path)
    return entry


def stage_files(staging: Path, copies: dict[Path, tuple[str, roles.Role, str | None]]) -> list[dict]:
    """Copy {source: (relative path, role, precision)} into a staging bundle; return their manifest entries."""
    entries = []
    for source, (relative, role, precision) in copies.items():
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, staging / relative)
        entries.append(file_entry(staging, relative, role, precision))
    return entries


def canonical(manifest: dict) -> bytes:
    """The bytes a signature covers: the manifest without its signature, keys sorted."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def new_manifest(name: str, files: list[dict], **fields: Any) -> dict:
    body = {"schema_version": SCHEMA_VERSION, "toolkit_version": __version__, "files": files, **fields}
    content = hashlib.sha256(json.dumps(sorted((f["path"], f["sha256"]) for f in files)).encode()).hexdigest()
    body["bundle_id"] = f"{name}-{content[:12]}"
    body["signature"] = None
    return body


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{bundle}: not a bundle (no {MANIFEST}).")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: damaged manifest ({err.msg} at line {err.lineno}).") from err
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{path}: the manifest has no schema_version.")
    if version > SCHEMA_VERSION:
        raise BundleError(f"{path}: schema version {version} is newer than this naturelm-edge reads "
                          f"({SCHEMA_VERSION}); upgrade naturelm-edge on this device.")
    for key in ("bundle_id", "files", "audio"):
        if key not in manifest:
            raise BundleError(f"{path}: the manifest lacks '{key}'.")
    return manifest


def verify_files(bundle: Path, manifest: dict) -> None:
    """Every listed file exists with its size and sha256 (a cut-off transfer or an edit is caught)."""
    for entry in manifest["files"]:
        path = Path(bundle) / entry["path"]
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing.")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise BundleError(f"{path}: {size} bytes, the manifest says {entry['bytes']} (cut short or altered).")
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the manifest (altered after building).")


def write_bundle(staging: Path, out: Path, manifest: dict, tar: bool = False) -> Path:
    """Move a finished staging directory to ``out`` atomically; an existing bundle is replaced only then."""
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    verify_files(staging, manifest)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.with_name(out.name + ".previous")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    shutil.rmtree(old, ignore_errors=True)
    if tar:
        pack(out, out.with_suffix(".tar"))
    return out


def pack(bundle: Path, tar_path: Path) -> Path:
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as archive:
        for item in sorted(Path(bundle).iterdir()):
            archive.add(item, arcname=item.name)
    return tar_path


def unpack(tar_path: Path) -> Path:
    target = Path(tempfile.mkdtemp(prefix="nle-bundle-"))
    try:
        with tarfile.open(tar_path) as archive:
            archive.extractall(target, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise BundleError(f"{tar_path}: not a readable bundle archive ({err}).") from err
    return target

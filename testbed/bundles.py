"""Bundles made from other bundles for tests and benchmarks: a changed file, an added one, a consistent manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from naturelm_edge.bundle import roles
from naturelm_edge.bundle.manifest import file_entry, new_manifest, read_manifest
from naturelm_edge.hashing import sha256_file


def variant(bundle: Path, out: Path, changes: dict[str, bytes], role: roles.Role = roles.REPORT) -> Path:
    """A copy of ``bundle`` with some files replaced or added, and a manifest (and id) that matches them."""
    shutil.copytree(bundle, out)
    manifest = read_manifest(out)
    for relative, data in changes.items():
        (out / relative).write_bytes(data)
    listed = {f["path"]: f for f in manifest["files"]}
    files = [{**f, "sha256": sha256_file(out / f["path"]), "bytes": (out / f["path"]).stat().st_size}
             if f["path"] in changes else f for f in manifest["files"]]
    files += [file_entry(out, p, role) for p in changes if p not in listed]
    name = manifest["bundle_id"].rsplit("-", 1)[0]
    fields = {k: v for k, v in manifest.items() if k not in ("files", "bundle_id", "signature", "schema_version", "toolkit_version")}
    (out / "manifest.json").write_text(json.dumps(new_manifest(name, files, **fields), indent=2))
    return out


def without(bundle: Path, out: Path, role: roles.Role) -> Path:
    """A copy of ``bundle`` without the files of ``role``, with a manifest (and id) that matches."""
    shutil.copytree(bundle, out)
    manifest = read_manifest(out)
    for entry in manifest["files"]:
        if entry["role"] == role.name:
            (out / entry["path"]).unlink()
    files = [f for f in manifest["files"] if f["role"] != role.name]
    name = manifest["bundle_id"].rsplit("-", 1)[0]
    fields = {k: v for k, v in manifest.items() if k not in ("files", "bundle_id", "signature", "schema_version", "toolkit_version")}
    (out / "manifest.json").write_text(json.dumps(new_manifest(name, files, **fields), indent=2))
    return out

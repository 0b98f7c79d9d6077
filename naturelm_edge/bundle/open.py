"""An opened bundle: verified on load (schema, hashes, signature) with typed views of its manifest.

It sits above ``manifest`` (reading and writing) and ``signing`` (which needs the manifest's canonical form), so
opening a bundle can check its signature without a circle between the two.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naturelm_edge.bundle import roles
from naturelm_edge.bundle.contract import AudioContract, DecoderFiles, DetectorSpec, check_roles, read_audio
from naturelm_edge.bundle.manifest import (
    BundleError,
    new_manifest,
    read_manifest,
    stage_files,
    unpack,
    verify_files,
    write_bundle,
)
from naturelm_edge.bundle.signing import trusted_keys_dir, verify_signature


@dataclass
class Bundle:
    """A verified bundle with typed views of its manifest; the runtime reads nothing else from it."""

    root: Path
    manifest: dict

    def __post_init__(self) -> None:
        where = str(self.root)
        self.audio: AudioContract = read_audio(self.manifest["audio"], where)
        if self.answer_kind not in (roles.TEXT, roles.SCORES):
            raise BundleError(f"{where}: the bundle answers with {self.answer_kind!r}, which this naturelm-edge does not "
                              "know; upgrade naturelm-edge on this device.")
        check_roles(self.manifest["files"], self.audio, where, self.answer_kind)

    @property
    def id(self) -> str:
        return self.manifest["bundle_id"]

    def has(self, role: roles.Role) -> bool:
        return any(entry["role"] == role.name for entry in self.manifest["files"])

    def entry(self, role: roles.Role) -> dict:
        for entry in self.manifest["files"]:
            if entry["role"] == role.name:
                return entry
        raise BundleError(f"{self.root}: the bundle has no {role.name} file.")

    def file(self, role: roles.Role) -> Path:
        return self.root / self.entry(role)["path"]

    @property
    def encoder(self) -> Path:
        return self.file(roles.ENCODER)

    @property
    def encoder_kind(self) -> str:
        """"full" (NatureLM's audio path) or "student" (distilled; bundles before the choice carry the full one)."""
        return (self.manifest.get("encoder") or {}).get("kind", "full")

    @property
    def decoder(self) -> DecoderFiles:
        return DecoderFiles(self.file(roles.DECODER), self.file(roles.DECODER_TABLES), self.file(roles.DECODER_CONFIG),
                            self.file(roles.TOKENIZER))

    @property
    def detector(self) -> DetectorSpec | None:
        if not self.has(roles.DETECTOR):
            return None
        section = self.manifest.get("detector") or {}
        return DetectorSpec(self.file(roles.DETECTOR), float(section.get("threshold", 0.0)),
                            section.get("pool_sharpness"))

    @property
    def answer_kind(self) -> str:
        """``text`` (a decoder answers each question) or ``scores`` (the encoder scores each label)."""
        return (self.manifest.get("answers") or {}).get("kind", roles.TEXT)

    @property
    def threshold(self) -> float:
        """A scores bundle's confidence from which a label is named (its teacher's)."""
        return float((self.manifest.get("answers") or {}).get("threshold", 0.5))

    @property
    def presence(self) -> bool:
        """Whether a scores bundle's encoder ends with a presence column (see :mod:`edge_runtime.scores`)."""
        return bool((self.manifest.get("answers") or {}).get("presence", False))

    @property
    def support(self) -> dict | None:
        """A scores bundle's support column and floor (see :mod:`edge_runtime.scores`), None without one."""
        return (self.manifest.get("answers") or {}).get("support")

    @property
    def escalation_threshold(self) -> float | None:
        """The confidence below which the bundle's own answers escalate, chosen at build on held-back recordings
        (a scores bundle's; None: the profile's threshold, made for a decoder's token probabilities, holds)."""
        value = (self.manifest.get("escalation") or {}).get("confidence_threshold")
        return None if value is None else float(value)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.get("labels") or [])

    @property
    def questions(self) -> list[str]:
        if self.answer_kind == roles.SCORES:
            return [self.manifest["answers"]["question"]]
        return [t["question"] for t in self.manifest["prompts"]["tasks"]]


def load_bundle(path: Path, trusted_keys: Path | None = None) -> Bundle:
    """Open a bundle directory (or ``.tar``), verifying schema, hashes and, when keys are trusted, signature."""
    path = Path(path)
    if path.is_file() and path.suffix == ".tar":
        path = unpack(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    keys = trusted_keys or trusted_keys_dir()
    if keys is not None:
        verify_signature(manifest, keys, where=str(path))
    return Bundle(path, manifest)


def extend_bundle(bundle: Bundle, out: Path, additions: dict[Path, tuple[str, roles.Role, str | None]],
                  **fields: Any) -> Path:
    """A new bundle at ``out``: ``bundle``'s files plus ``additions`` {source: (relative path, role, precision)}.

    The manifest gains ``fields`` and a new bundle id (the files changed); a role already present is
    replaced. The signature is dropped: the caller signs again.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    replaced = {role.name for _, role, _ in additions.values()}
    kept = [e for e in bundle.manifest["files"] if e["role"] not in replaced]  # verified on load: entries carry over
    for entry in kept:
        (staging / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(bundle.root / entry["path"], staging / entry["path"])
    entries = kept + stage_files(staging, additions)
    body = {k: v for k, v in bundle.manifest.items() if k not in ("files", "bundle_id", "signature", "schema_version",
                                                                  "toolkit_version")}
    name = bundle.id.rsplit("-", 1)[0]
    return write_bundle(staging, out, new_manifest(name, entries, **{**body, **fields}))

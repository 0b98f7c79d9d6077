"""ed25519 signatures over bundle manifests (the manifest holds every file's sha256, so it covers all).

A device that has trusted public keys (``--trusted-keys DIR`` or ``$NATURELM_EDGE_TRUSTED_KEYS``, a folder
of ``*.pub`` files) refuses unsigned bundles and bundles signed by any other key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from naturelm_edge.atomic import write_atomic
from naturelm_edge.bundle.manifest import MANIFEST, BundleError, canonical, read_manifest, verify_files

ENV_VAR = "NATURELM_EDGE_TRUSTED_KEYS"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(prefix: Path) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (private, mode 600) and ``PREFIX.pub``."""
    private = Ed25519PrivateKey.generate()
    key_path, pub_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    key_path.parent.mkdir(parents=True, exist_ok=True)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_path, pub_path


def _private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError) as err:
        raise BundleError(f"{path}: not a readable ed25519 private key ({err}).") from err
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an ed25519 private key.")
    return key


def trusted_keys_dir() -> Path | None:
    value = os.environ.get(ENV_VAR)
    return Path(value) if value else None


def load_public_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    keys = {}
    for path in sorted(Path(folder).glob("*.pub")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except ValueError as err:
            raise BundleError(f"{path}: not a readable public key ({err}).") from err
        if isinstance(key, Ed25519PublicKey):
            keys[key_id(key)] = key
    if not keys:
        raise BundleError(f"{folder}: no ed25519 public keys (*.pub) to trust.")
    return keys


def sign_bundle(bundle: Path, private_key: Path) -> dict:
    """Verify the bundle's files, then sign its manifest in place (atomically)."""
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    key = _private(private_key)
    manifest["signature"] = {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
                             "value": base64.b64encode(key.sign(canonical(manifest))).decode()}
    write_atomic(Path(bundle) / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest["signature"]


def verify_signature(manifest: dict, trusted: Path, where: str) -> str:
    """Return the signing key id, or raise when the bundle is unsigned or not signed by a trusted key."""
    keys = load_public_keys(trusted)
    signature = manifest.get("signature")
    if not signature:
        raise BundleError(f"{where}: the bundle is unsigned and this device only accepts signed bundles.")
    key = keys.get(signature.get("key_id", ""))
    if key is None:
        raise BundleError(f"{where}: signed by key {signature.get('key_id')}, which this device does not trust.")
    try:
        key.verify(base64.b64decode(signature["value"]), canonical(manifest))
    except (InvalidSignature, ValueError, KeyError) as err:
        raise BundleError(f"{where}: the signature does not match the manifest (altered after signing).") from err
    return signature["key_id"]

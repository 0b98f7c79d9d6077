"""``edge bundle``: verify, sign and make keys for model bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from naturelm_edge.cli.common import console, user_errors

bundle_app = typer.Typer(help="Verify, sign and inspect model bundles.", no_args_is_help=True)


@bundle_app.command("verify")
@user_errors
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    trusted_keys: Annotated[Path | None, typer.Option(help="Folder of trusted *.pub keys: require a valid signature.")] = None,
) -> None:
    """Check the schema, every file's size and sha256, and the signature when keys are trusted."""
    from naturelm_edge.bundle.open import load_bundle

    loaded = load_bundle(bundle, trusted_keys)
    signature = loaded.manifest.get("signature")
    signed = f"signed by {signature['key_id']}" if signature else "unsigned"
    console.print(f"{loaded.id}: {len(loaded.manifest['files'])} files verified, {signed}, "
                  f"profile {loaded.manifest.get('target_profile')}")


@bundle_app.command("add-speech")
@user_errors
def bundle_add_speech(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    out: Annotated[Path | None, typer.Option(help="Write the new bundle here (default: replace BUNDLE).")] = None,
) -> None:
    """Add the privacy filter's speech model (Silero VAD, from the installed silero-vad wheel) to a bundle."""
    from naturelm_edge.privacy.silero import add_speech

    written = add_speech(bundle, out)
    console.print(f"speech model added -> {written} (sign it again if it was signed)")


@bundle_app.command("sign")
@user_errors
def bundle_sign(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory.")],
    key: Annotated[Path, typer.Option("--key", help="ed25519 private key (PEM) from `edge bundle keygen`.")],
) -> None:
    """Sign a bundle's manifest with an ed25519 key (the files are verified first)."""
    from naturelm_edge.bundle.signing import sign_bundle

    signature = sign_bundle(bundle, key)
    console.print(f"{bundle}: signed by key {signature['key_id']}")


@bundle_app.command("keygen")
@user_errors
def bundle_keygen(prefix: Annotated[Path, typer.Argument(help="Writes PREFIX.key (private) and PREFIX.pub.")]) -> None:
    """Create an ed25519 key pair for signing bundles; copy PREFIX.pub to devices' trusted-keys folder."""
    from naturelm_edge.bundle.signing import generate_keypair

    private, public = generate_keypair(prefix)
    console.print(f"private key {private} (keep it secret), public key {public}")



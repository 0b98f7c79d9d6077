"""Load NatureLM-audio checkpoints: hub-layout directories, training files, or hub ids.

Three sources, one result (:class:`LoadedCheckpoint`):

* a directory in the hub layout: ``config.json`` + ``model.safetensors`` (+ the Llama base at
  ``llama_path``, resolved against the directory first);
* a training file holding ``{"model": state_dict}`` (read with ``weights_only=True``; never unpickles
  arbitrary objects), with the config from ``config.json`` beside it or a preset;
* a hub id (``EarthSpeciesProject/NatureLM-audio``) when the hub is reachable or the files are cached.

Only the tensors the requested parts need are read, so exporting the encoder of the real 1.5 GB
checkpoint never materialises the language-model weights.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from naturelm_edge.errors import CheckpointError
from naturelm_edge.hashing import sha256_file
from naturelm_edge.models.config import NatureLMConfig, preset
from naturelm_edge.models.naturelm import NatureLM
from naturelm_edge.models.placement import Placement

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINING_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
LLM_PREFIXES = ("llama_model.", "llama_embed_tokens.")
EMBED_ALIAS = "llama_model.base_model.model.model.embed_tokens.weight"
EMBED_KEY = "llama_embed_tokens.weight"
LLM_EMBED = "base_model.model.model.embed_tokens.weight"  # the same tensor inside the PEFT-wrapped Llama
_REL_BIAS_ALIAS = re.compile(r"^beats\.encoder\.layers\.([1-9]\d*)\.self_attn\.relative_attention_bias\.weight$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class CheckpointSource:
    """Where the files of one checkpoint are."""

    name: str  # what the user passed, for messages
    config: NatureLMConfig
    weights: Path
    root: Path  # where relative llama_path is resolved
    origin: str = "config.json"  # where the settings came from: the file beside the weights, or a preset

    def describe(self) -> str:
        """The settings used, as ``edge export encoder`` prints them and its report records them."""
        beats = self.config.beats_cfg
        sizes = f"BEATs {beats.encoder_layers}x{beats.encoder_embed_dim}, LLM width {self.config.llm_hidden_size}"
        return "; ".join([f"{self.origin} ({sizes})", *self.config.notes()])

    def sha256(self) -> str:
        return sha256_file(self.weights)


@dataclass
class LoadedCheckpoint:
    source: CheckpointSource
    model: NatureLM

    @property
    def llm(self):  # noqa: ANN201 - LanguageModel, imported lazily to keep transformers optional
        return getattr(self.model, "language_model", None)


def resolve(source: str | Path, preset_name: str | None = None) -> CheckpointSource:
    """Find config and weights for ``source`` (directory, training file or hub id)."""
    path = Path(source).expanduser()
    if path.is_dir():
        config = _config_for(path / CONFIG_FILE, preset_name)
        weights = path / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(f"{weights}: model.safetensors is missing from the checkpoint directory.")
        return CheckpointSource(str(source), config, weights, path)
    if path.is_file():
        beside = path.parent / CONFIG_FILE
        config = _config_for(beside, preset_name) if beside.is_file() and preset_name is None else None
        if config is not None:
            return CheckpointSource(str(source), config, path, path.parent)
        name = preset_name or "official"
        return CheckpointSource(str(source), preset(name), path, path.parent, f"preset {name}")
    if _HUB_ID.match(str(source)) and not str(source).startswith((".", "/")):
        return _from_hub(str(source), preset_name)
    raise CheckpointError(f"{source}: no such checkpoint directory or file.")


def _config_for(path: Path, preset_name: str | None) -> NatureLMConfig:
    if path.is_file():
        return NatureLMConfig.from_file(path)
    if preset_name:
        return preset(preset_name)
    raise CheckpointError(f"{path}: config.json is missing from the checkpoint directory.")


def _from_hub(repo_id: str, preset_name: str | None) -> CheckpointSource:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError(f"{repo_id}: install the 'export' extra to load checkpoints from the hub.") from err
    patterns = [CONFIG_FILE, WEIGHTS_FILE]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached: try the network once
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as err:  # noqa: BLE001 - any hub failure gets the same instructions
            raise CheckpointError(
                f"{repo_id}: not in the local Hugging Face cache and the hub cannot be reached "
                f"({type(err).__name__}); on a connected machine run "
                f"`huggingface-cli download {repo_id} --local-dir DIR`, copy DIR here with the Llama base "
                f"in DIR/llama (or set llama_path in DIR/config.json), and pass DIR instead."
            ) from err
    config = _config_for(folder / CONFIG_FILE, preset_name)
    return CheckpointSource(repo_id, config, folder / WEIGHTS_FILE, folder)


def read_tensors(path: Path, wanted: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or training file (only ``wanted`` keys when given), in their stored dtype:
    loading copies them into the model's own dtype, so nothing passes through a float32 copy."""
    return dict(iter_tensors(path, wanted))


def iter_tensors(path: Path, wanted: Iterable[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors (only ``wanted`` keys when given) one at a time, in their stored dtype (bounded memory)."""
    keep = None if wanted is None else set(wanted)
    if path.suffix in TRAINING_SUFFIXES:
        yield from ((k, v) for k, v in _read_training_file(path).items() if keep is None or k in keep)
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in [k for k in handle.keys() if keep is None or k in keep]:
                yield key, handle.get_tensor(key)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err}).") from err


def stored_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Key -> shape of every tensor in the weights file, without reading the data."""
    if path.suffix in TRAINING_SUFFIXES:
        return {k: tuple(v.shape) for k, v in _read_training_file(path).items()}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({err}).") from err


def _read_training_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and weights_only errors all mean the same here
        raise CheckpointError(
            f"{path}: not a readable training checkpoint ({type(err).__name__}: {str(err).splitlines()[0][:120]})."
        ) from err
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: a training checkpoint must hold {{'model': state_dict}}.")
    return state


def canonical_key(key: str) -> str | None:
    """Map aliases of shared tensors to the stored name; ``None`` for aliases that are never needed."""
    if _REL_BIAS_ALIAS.match(key):
        return None  # BEATs shares layer 0's relative position table with every layer
    if key == EMBED_ALIAS:
        return EMBED_KEY
    return key


def load(
    source: str | Path,
    *,
    with_llm: bool = False,
    preset_name: str | None = None,
    llama_path: str | Path | None = None,
    placement: Placement | None = None,
) -> LoadedCheckpoint:
    """Build :class:`NatureLM` from ``source`` and load its weights, checking every key and shape.

    With ``with_llm`` the Llama base is found (folder or hub id, as the original), checked against the
    checkpoint's width and the free memory of the device, and loaded in ``placement``'s dtype onto it.
    """
    placement = placement or Placement("cpu", "float32")
    resolved = resolve(source, preset_name)
    shapes = stored_keys(resolved.weights)
    if "audio_llama_proj.weight" in shapes:  # the LLM width is a property of the weights, not the preset
        resolved.config.llm_hidden_size = shapes["audio_llama_proj.weight"][0]
    model = NatureLM(resolved.config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if with_llm:
        from naturelm_edge.models.llm import LanguageModel

        llama_dir = _llama_dir(resolved, llama_path)
        _check_llama(resolved, llama_dir, shapes, placement)
        embed_key = next((k for k in (EMBED_KEY, EMBED_ALIAS) if k in shapes), None)
        embed = read_tensors(resolved.weights, [embed_key])[embed_key] if embed_key else None
        llm = LanguageModel(llama_dir, resolved.config, placement, embeddings=embed)
        del embed  # the model holds it now (or, of another size, leaves it to the key check below)
        model.language_model = llm  # plain attribute: not a submodule, keys handled below
        llm_state = {f"llama_model.{k}": v for k, v in llm.model.state_dict().items()}
        llm_state[EMBED_KEY] = llm.embed_tokens.weight
        expected.update({canonical_key(k): tuple(v.shape) for k, v in llm_state.items() if canonical_key(k)})

    stored = {}
    for key, shape in shapes.items():
        name = canonical_key(key)
        if name is not None and (name not in stored or key == name):
            stored[name] = (key, shape)
    if not with_llm:
        stored = {k: v for k, v in stored.items() if not k.startswith(LLM_PREFIXES)}
    _check_keys(resolved, expected, {k: s for k, (_, s) in stored.items()}, with_llm)

    audio_keys = {name: file_key for name, (file_key, _) in stored.items() if not name.startswith(LLM_PREFIXES)}
    tensors = read_tensors(resolved.weights, audio_keys.values())
    model.load_state_dict({name: tensors[key] for name, key in audio_keys.items()}, strict=True)
    if with_llm:  # one tensor at a time into the model's own: an 8B model's embeddings are not held twice
        params = llm.model.state_dict(keep_vars=True)
        wanted = {key: name for name, (key, _) in stored.items() if name.startswith(LLM_PREFIXES) and key != embed_key}
        with torch.no_grad():
            for key, tensor in iter_tensors(resolved.weights, wanted):
                name = wanted[key]
                target = params.get(LLM_EMBED if name == EMBED_KEY else name[len("llama_model.") :])
                if target is not None:
                    target.copy_(tensor)
    model.to(placement.torch_device)  # the audio path stays float32; autocast runs it in bf16 as the original
    model.eval()
    return LoadedCheckpoint(resolved, model)


def full_model_parameters(source: str | Path, llama_path: str | Path | None = None) -> int:
    """Weights of the full model (Llama base + checkpoint), from headers and configs alone."""
    from naturelm_edge.models.llm import llama_parameters

    resolved = resolve(source)
    stored = sum(math.prod(shape) for key, shape in stored_keys(resolved.weights).items() if not _is_llama_base(key))
    return llama_parameters(_llama_dir(resolved, llama_path)) + stored


def _llama_dir(resolved: CheckpointSource, override: str | Path | None) -> Path:
    """The Llama base: a folder (absolute, next to the checkpoint, or in the working directory), else a hub
    id resolved through the Hugging Face cache as the original's ``from_pretrained`` does."""
    named = str(override or resolved.config.llama_path)
    candidate = Path(named).expanduser()
    places = [candidate] if candidate.is_absolute() else [resolved.root / candidate, Path.cwd() / candidate]
    for path in places:
        if (path / CONFIG_FILE).is_file():
            return path
    if _HUB_ID.match(named) and not named.startswith((".", "/")):
        return _llama_from_hub(resolved, named)
    raise CheckpointError(
        f"{resolved.name}: the Llama base {named!r} (llama_path) is not a folder with config.json at "
        f"{' or '.join(str(p) for p in places)}; pass --llama-path with the Llama-3.1-8B-Instruct folder or hub id."
    )


def _llama_from_hub(resolved: CheckpointSource, repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download

    patterns = ["*.json", "*.safetensors", "tokenizer*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception as cached_err:  # noqa: BLE001 - not (fully) in the cache
        if constants.HF_HUB_OFFLINE:
            raise CheckpointError(
                f"{resolved.name}: the Llama base {repo_id} is not in the Hugging Face cache "
                f"({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE is set; download it on a connected machine "
                f"(`huggingface-cli download {repo_id}`) or pass --llama-path with a local folder."
            ) from cached_err
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001 - gated repo, no network, no token: one sentence for all
        raise CheckpointError(
            f"{resolved.name}: the Llama base {repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and could not be downloaded ({type(err).__name__}); run `huggingface-cli login` and accept the Llama "
            f"3.1 licence, or pass --llama-path with a local folder."
        ) from err


def _check_llama(resolved: CheckpointSource, llama_dir: Path, shapes: dict[str, tuple[int, ...]],
                 placement: Placement) -> None:
    """A Llama base of another width, or one that will not fit, is refused before any weight is read."""
    from naturelm_edge.models.llm import llama_parameters

    config = json.loads((llama_dir / CONFIG_FILE).read_text())
    width = shapes.get("audio_llama_proj.weight", (config.get("hidden_size"),))[0]
    if config.get("hidden_size") != width:
        raise CheckpointError(
            f"{llama_dir}: this Llama base is {config.get('hidden_size')} wide but the checkpoint's audio "
            f"projection feeds {width}; it is not the base {resolved.name} was trained on."
        )
    placement.check_memory(llama_parameters(llama_dir), f"{resolved.name} with the Llama base {llama_dir}")


def _is_llama_base(key: str) -> bool:
    return key.startswith("llama_model.") and ".lora_" not in key


def _check_keys(
    resolved: CheckpointSource,
    expected: dict[str, tuple[int, ...]],
    stored: dict[str, tuple[int, ...]],
    with_llm: bool,
) -> None:
    missing = sorted(k for k in expected if k not in stored and not (with_llm and (_is_llama_base(k) or k == EMBED_KEY)))
    unexpected = sorted(k for k in stored if k not in expected)
    if not missing and not unexpected:
        wrong = [(k, stored[k], expected[k]) for k in sorted(expected) if k in stored and stored[k] != expected[k]]
        if wrong:
            key, have, want = wrong[0]
            raise CheckpointError(
                f"{resolved.weights}: {len(wrong)} tensors have other sizes than the config describes "
                f"(first: {key} is {list(have)} in the file, {list(want)} expected); the config.json and the "
                f"weights come from different presets."
            )
        return
    known = ("beats.", "ln_audio.", "audio_Qformer.", "audio_query_tokens", "audio_llama_proj.")
    if not any(k.startswith(known) for k in stored):
        cause = "this is not a NatureLM-audio checkpoint (wrong file?)"
    elif any(k.startswith("beats.encoder.layers.") for k in missing + unexpected):
        cause = "the file has another number of layers than the config (weights and config from different presets?)"
    else:
        cause = "the file was written by another model version or is incomplete"
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        parts.append(
            f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}{', ...' if len(unexpected) > 3 else ''})"
        )
    raise CheckpointError(f"{resolved.weights}: {' and '.join(parts)}; likely cause: {cause}.")

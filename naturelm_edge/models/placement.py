"""Where and in what precision the full model runs, checked before anything long starts.

NatureLM-audio's own code loads the Llama base in bfloat16 on a GPU (float32 only on the CPU) and runs
BEATs, the Q-Former and the LLM under bfloat16 autocast. :class:`Placement` resolves ``--device`` and
``--dtype`` to that, refuses what the machine cannot run (no CUDA, bf16 on a GPU without it) and what
will not fit in memory, each in one sentence.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from naturelm_edge.errors import EdgeError

DEVICES = "auto, cpu, cuda or cuda:N"
DTYPES = ("auto", "bfloat16", "float32")
BYTES = {torch.bfloat16: 2, torch.float32: 4}


class PlacementError(EdgeError):
    """A device or precision this machine cannot run the model with."""


@dataclass(frozen=True)
class Placement:
    """``--device`` and ``--dtype`` as the user gave them; ``auto`` picks what the original would."""

    device: str = "auto"
    dtype: str = "auto"

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise PlacementError(f"--device {self.device!r}: not a device; use {DEVICES}.") from err
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise PlacementError(f"--device {self.device}: this machine has no CUDA GPU that torch can use.")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise PlacementError(
                    f"--device {self.device}: only {torch.cuda.device_count()} CUDA device(s) here."
                )
        elif device.type != "cpu":
            raise PlacementError(f"--device {self.device!r}: unsupported; use {DEVICES}.")
        return device

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise PlacementError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}.")
        device = self.torch_device
        if self.dtype == "float32" or (self.dtype == "auto" and device.type == "cpu"):
            return torch.float32
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(device)
            raise PlacementError(f"--dtype bfloat16: {name} cannot compute in bfloat16; pass --dtype float32.")
        return torch.bfloat16

    def check(self) -> tuple[torch.device, torch.dtype]:
        """Resolve both now: a device or dtype this machine cannot run fails here, in one sentence."""
        return self.torch_device, self.torch_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast around the model, as the original runs it; nothing in float32."""
        if self.torch_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.torch_device.type, dtype=torch.bfloat16)

    def check_memory(self, parameters: int, what: str) -> None:
        """Refuse before loading when ``parameters`` weights in this dtype cannot fit on the device."""
        need = parameters * BYTES[self.torch_dtype]
        device = self.torch_device
        have = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else available_ram()
        if have and need > have:
            hint = " or --dtype bfloat16" if self.torch_dtype == torch.float32 else ""
            raise PlacementError(
                f"{what}: {parameters / 1e9:.2f} B parameters in {str(self.torch_dtype).removeprefix('torch.')} need "
                f"{need / 2**30:.1f} GiB but {device} has {have / 2**30:.1f} GiB free; use a larger device{hint}."
            )

    def describe(self) -> str:
        return f"{self.torch_device} {str(self.torch_dtype).removeprefix('torch.')}"


def available_ram() -> int | None:
    """MemAvailable in bytes (Linux), or None where it cannot be read."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None

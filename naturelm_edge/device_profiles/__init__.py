"""Device profiles: one TOML file per device (providers, precision, threads, budgets), validated and detected."""

from naturelm_edge.device_profiles.registry import DeviceFacts, all_profiles, detect, get, load_file
from naturelm_edge.device_profiles.schema import Profile, ProfileError, Provider

__all__ = ["DeviceFacts", "Profile", "ProfileError", "Provider", "all_profiles", "detect", "get", "load_file"]

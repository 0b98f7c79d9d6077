"""``edge bench``: what a bundle costs on a device, stage by stage, beside BirdNET when it is installed."""

"""Constants of the shared reference recordings that tests and benchmarks both rely on."""

from __future__ import annotations

# folders of ../shared/data/audio never used to train or calibrate, only to judge
HELD_OUT = ["whombat", "Rthoptera", "librosa-data"]
BAT_EXPANSION = 10.0  # whombat's recordings are read 10 times slower, as bat workers do
LOCA = [f"opensoundscape/LOCA_2021_09_24_652_{i}.wav" for i in range(3, 9)]  # 1 s clips, one flight call each
CALL_FREE = [("birdvoxdetect/BirdVox-scaper_example_background.wav", 1.0),
             ("birdvoxdetect/ff3d3feb-3371-44ad-a3b3-85969c2cd5ab.wav", 1.0),
             ("batdetect2/AudiomothNoBatCalls.WAV", BAT_EXPANSION)]
# the question the tiny teachers are taught to answer with species names
QUESTION = "What is the common name for the focal species in the audio?"
TASKS_TOML = f"""
[[task]]
id = "common_name"
kind = "common_name"
question = "{QUESTION}"
max_new_tokens = 24
"""

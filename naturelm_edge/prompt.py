"""NatureLM's prompt around the audio: one implementation for the teacher, the student and the device."""

from __future__ import annotations

AUDIO_SLOT = "<AudioHere>"


def prompt_parts(template: str, question: str) -> tuple[str, str]:
    """The text before and after the audio tokens, exactly as NatureLM's processor builds the prompt."""
    before, after = template.format(f"<Audio>{AUDIO_SLOT}</Audio> {question}").split(AUDIO_SLOT)
    return before, after

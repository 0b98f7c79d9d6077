"""NatureLM's prompt around the audio and how it answers: one implementation for teacher, student and device."""

from __future__ import annotations

from dataclasses import dataclass, replace

AUDIO_SLOT = "<AudioHere>"
NOTHING_HEARD = "None"  # NatureLM's answer to the detection question when no animal calls in the window


def names_something(answer: str | None) -> bool:
    """Whether an answer names a call: anything but NatureLM's "None" (case and spaces aside) or nothing."""
    return bool(answer and answer.strip()) and answer.strip().lower() != NOTHING_HEARD.lower()


def prompt_parts(template: str, question: str) -> tuple[str, str]:
    """The text before and after the audio tokens, exactly as NatureLM's processor builds the prompt."""
    before, after = template.format(f"<Audio>{AUDIO_SLOT}</Audio> {question}").split(AUDIO_SLOT)
    return before, after


@dataclass(frozen=True)
class GenerationSettings:
    """The ``generate`` section of the original's ``configs/inference.yml``: how NatureLM-audio answers.

    Its ``temperature: 0.1`` is not listed: with ``do_sample: False`` it changes nothing.
    """

    num_beams: int = 2
    max_new_tokens: int = 300
    min_length: int = 1
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def but(self, num_beams: int | None = None, max_new_tokens: int | None = None) -> GenerationSettings:
        """These settings with the given ones replaced (``None`` keeps the current value)."""
        return replace(
            self,
            num_beams=self.num_beams if num_beams is None else int(num_beams),
            max_new_tokens=self.max_new_tokens if max_new_tokens is None else int(max_new_tokens),
        )

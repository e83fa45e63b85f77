"""Bars drawn in text: the pure formatter that the live display and the benchmark report share."""

from __future__ import annotations

__all__ = ["text_bar"]

_BLOCKS = " ▏▎▍▌▋▊▉█"


def text_bar(fraction: float, width: int) -> str:
    """``fraction`` (0 to 1, clipped) of ``width`` characters as block characters, to an eighth
    of a character, dotted up to the full width."""
    eighths = round(max(0.0, min(fraction, 1.0)) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width, "·")

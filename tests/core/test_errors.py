"""Client text in error messages is clipped, and no message outgrows a gRPC status header."""

from __future__ import annotations

from driftserve.core.errors import MAX_MESSAGE_BYTES, cap_message, clip, clip_list


def test_clip_keeps_short_text_and_says_how_long_long_text_was() -> None:
    assert clip("model") == "model"
    assert clip("x" * 100) == "x" * 100
    assert clip("x" * 12_000) == "x" * 100 + "... (12000 characters)"
    assert clip("é" * 50, limit=10) == "é" * 10 + "... (50 characters)"


def test_clip_list_caps_items_and_clips_each() -> None:
    assert clip_list([]) == "[]"
    assert clip_list(["a", 2]) == "['a', 2]"
    text = clip_list([f"m{i}" for i in range(50)], limit=3)
    assert text == "['m0', 'm1', 'm2', ... (50 in all)]"
    assert "(500 characters)" in clip_list(["y" * 500])


def test_cap_message_bounds_utf8_bytes_keeping_start_and_end() -> None:
    assert cap_message("short") == "short"
    assert cap_message("€" * 600) == "€" * 600  # 1,800 bytes: under the limit
    for text in ("a" * 50_000 + "END", "€" * 50_000 + "END", "a" * 1999 + "€" * 10 + "END", "\n" * 3000 + "END"):
        capped = cap_message(text)
        assert len(capped.encode("utf-8")) <= MAX_MESSAGE_BYTES
        head, marker_and_tail = capped.split(" [... ", 1)
        cut, tail = marker_and_tail.split(" characters cut ...] ", 1)
        assert text.startswith(head) and text.endswith(tail) and tail.endswith("END")
        assert len(head) + int(cut) + len(tail) == len(text)

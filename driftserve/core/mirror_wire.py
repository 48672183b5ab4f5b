"""What the server and the sidecar agree on about ``Mirror/Publish`` beyond its messages.

The sidecar answers an accepted stream with this header at once; a stream it refuses (a token
without scope ``mirror``, say) ends with a status and no header. The server tells the two apart by
the header itself, however long a loaded machine takes to deliver the refusal, rather than by how
long the stream has stayed open.
"""

from __future__ import annotations

from collections.abc import Iterable

MIRROR_ACCEPTED = ("driftserve-mirror", "accepted")


def accepted(initial_metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether the stream's response headers (key, value pairs) are the sidecar's acceptance."""
    return initial_metadata is not None and any(tuple(item) == MIRROR_ACCEPTED for item in initial_metadata)

"""Bearer tokens with scopes: the tokens file, and the one check every protocol makes.

A tokens file (``--auth-tokens-file``) holds one token per line with the scopes it grants::

    # token                              scopes (comma-separated; * = every scope)
    3f9c0a7e6b1d4c2a9e8f7b6a5d4c3b2a     infer
    b8e1d2c3a4f5061728394a5b6c7d8e9f     infer,admin
    0a1b2c3d4e5f60718293a4b5c6d7e8f9     mirror

Blank lines and ``#`` comments are ignored. A token is 16 to 512 printable ASCII characters
without spaces or ``#`` (it travels in an ``authorization`` header); a line with an unknown scope or a
token given twice makes the whole file invalid, so a typo never silently grants or revokes
access. Clients send ``authorization: Bearer <token>`` (gRPC metadata or an HTTP header).

Scopes: ``infer`` (inference, model and server metadata, model config and statistics, repository
index), ``admin`` (repository load and unload), ``monitor`` (the sidecar's drift reports),
``mirror`` (the server's mirror stream into the sidecar).

``TokenAuthority.authorize`` compares the presented token with every known one in constant time
(``hmac.compare_digest`` over SHA-256 digests, all of them, no early exit), and its errors never
contain the token: they say what was missing or wrong and what is expected.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import stat
from collections.abc import Iterable
from pathlib import Path

from driftserve.core.errors import PermissionDenied, Unauthenticated
from driftserve.core.startup import StartupError

logger = logging.getLogger(__name__)

SCOPE_INFER = "infer"
SCOPE_ADMIN = "admin"
SCOPE_MONITOR = "monitor"
SCOPE_MIRROR = "mirror"
SCOPES = (SCOPE_INFER, SCOPE_ADMIN, SCOPE_MONITOR, SCOPE_MIRROR)
ALL_SCOPES = "*"
# The scope a call needs when any valid token will do (server reflection).
ANY_SCOPE = ""
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 512
AUTHORIZATION_KEY = "authorization"
BEARER = "bearer"
REJECTION_REASONS = ("missing", "malformed", "unknown", "scope")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def check_token(token: str) -> str:
    """What is wrong with ``token`` as a bearer token ("" when nothing); never quotes it."""
    if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS:
        return f"a token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters, this one has {len(token)}"
    if not all("!" <= ch <= "~" and ch != "#" for ch in token):
        return "a token may hold only printable ASCII characters, without spaces or '#'"
    return ""


class TokenAuthority:
    """The known tokens and their scopes; ``authorize`` is the check, raising the error to send."""

    def __init__(self, tokens: Iterable[tuple[str, frozenset[str]]], path: Path | None = None) -> None:
        self._entries = [(_digest(token), scopes) for token, scopes in tokens]
        self.path = path

    def __len__(self) -> int:
        return len(self._entries)

    def authorize(self, authorization: str | None, scope: str) -> frozenset[str]:
        """The token's scopes when ``authorization`` is ``Bearer <known token>`` granting ``scope``.

        ``scope`` ``ANY_SCOPE`` accepts any known token. Raises ``Unauthenticated`` (reason
        missing, malformed or unknown) or ``PermissionDenied`` (a known token without ``scope``).
        """
        if not authorization:
            raise Unauthenticated(
                "missing bearer token: send the header (gRPC metadata) 'authorization: Bearer <token>'", "missing"
            )
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != BEARER or not token:
            raise Unauthenticated(
                "malformed authorization header: expected 'Bearer <token>' (the Bearer scheme, a space, the token)",
                "malformed",
            )
        presented = _digest(token)
        granted: frozenset[str] | None = None
        for digest, scopes in self._entries:  # every entry, in constant time each: no early exit
            if hmac.compare_digest(presented, digest):
                granted = scopes
        if granted is None:
            raise Unauthenticated("unknown bearer token: it is not in the server's tokens file", "unknown")
        if scope != ANY_SCOPE and scope not in granted and ALL_SCOPES not in granted:
            has = ", ".join(sorted(granted))
            raise PermissionDenied(f"this token lacks scope '{scope}' needed by this call (it grants: {has})")
        return granted

    @classmethod
    def from_file(cls, path: Path, flag: str = "--auth-tokens-file") -> TokenAuthority:
        """Read a tokens file (format above); ``StartupError`` naming ``flag``, the file and the line."""
        text = read_secret_file(path, flag)
        tokens: list[tuple[str, frozenset[str]]] = []
        seen: set[bytes] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            where = f"{flag} {path} line {number}"
            if len(fields) != 2:
                raise StartupError(f"{where}: expected '<token> <scope>[,<scope>...]', got {len(fields)} field(s)")
            token, scope_text = fields
            problem = check_token(token)
            if problem:
                raise StartupError(f"{where}: {problem}")
            scopes = frozenset(s for s in scope_text.split(",") if s)
            unknown = sorted(scopes - {*SCOPES, ALL_SCOPES})
            if unknown or not scopes:
                raise StartupError(
                    f"{where}: unknown scope(s) {', '.join(map(repr, unknown)) or 'none given'}; "
                    f"use {', '.join(SCOPES)} or {ALL_SCOPES}"
                )
            digest = _digest(token)
            if digest in seen:
                raise StartupError(f"{where}: this token is already on an earlier line; give each token once")
            seen.add(digest)
            tokens.append((token, scopes))
        if not tokens:
            raise StartupError(f"{flag} {path} holds no tokens; add lines '<token> <scope>[,<scope>...]'")
        return cls(tokens, path)

    def reload(self) -> int:
        """Read the tokens file again and use its tokens from the next call on (SIGHUP rotates
        tokens without a restart); returns how many. A file that is now invalid raises
        ``StartupError`` and the tokens in use stay."""
        if self.path is None:
            raise StartupError("these tokens did not come from a file; there is nothing to reload")
        fresh = TokenAuthority.from_file(self.path)
        self._entries = fresh._entries  # one assignment: a call sees the old list or the new one
        return len(self._entries)


def reload_on_sighup(authority: TokenAuthority | None) -> None:
    """In the running loop: SIGHUP re-reads ``authority``'s tokens file (a no-op without tokens).

    A file that became invalid is logged as an error and the tokens in use stay.
    """
    if authority is None:
        return
    import asyncio
    import signal

    def reload() -> None:
        try:
            count = authority.reload()
        except StartupError as exc:
            logger.error("SIGHUP: tokens not reloaded, the previous ones stay in use: %s", exc.message)
            return
        logger.info("SIGHUP: reloaded %d bearer token(s) from %s", count, authority.path)

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def read_secret_file(path: Path, flag: str) -> str:
    """The text of a file holding secrets; ``StartupError`` naming ``flag`` when it cannot be read.

    A file other users can read is used, with a warning: its tokens are as good as published.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StartupError(f"{flag} {path} does not exist; pass an existing file") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise StartupError(f"{flag} {path} cannot be read ({why}); pass a readable UTF-8 file") from None
    if mode & stat.S_IROTH:
        logger.warning("%s %s is readable by every user of this machine; chmod 600 it", flag, path)
    return text


def read_token_file(path: Path, flag: str) -> str:
    """The one token of a client's token file (its first line that is not blank or a comment)."""
    text = read_secret_file(path, flag)
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            problem = check_token(line)
            if problem:
                raise StartupError(f"{flag} {path}: {problem}")
            return line
    raise StartupError(f"{flag} {path} holds no token; put the token on its first line")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata that presents ``token``."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)

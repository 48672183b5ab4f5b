"""The tokens file and the bearer-token check: statuses, reasons, messages that never hold a token."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import grpc
import pytest

from driftserve.core.auth import ANY_SCOPE, TokenAuthority, bearer, read_token_file
from driftserve.core.errors import PermissionDenied, Unauthenticated
from driftserve.core.startup import StartupError
from tests.tls_support import ADMIN_TOKEN, INFER_TOKEN, MIRROR_TOKEN, UNKNOWN_TOKEN, write_tokens


@pytest.fixture
def authority(tmp_path: Path) -> TokenAuthority:
    return TokenAuthority.from_file(write_tokens(tmp_path / "tokens"))


def test_a_known_token_with_the_scope_is_accepted_and_its_scopes_returned(authority: TokenAuthority) -> None:
    assert len(authority) == 4
    assert authority.authorize(f"Bearer {INFER_TOKEN}", "infer") == {"infer"}
    assert authority.authorize(f"bearer  {ADMIN_TOKEN} ", "admin") == {"infer", "admin"}
    assert authority.authorize(f"Bearer {MIRROR_TOKEN}", ANY_SCOPE) == {"mirror"}


@pytest.mark.parametrize(
    ("value", "reason", "words"),
    [
        (None, "missing", "missing bearer token"),
        ("", "missing", "missing bearer token"),
        (f"Basic {INFER_TOKEN}", "malformed", "expected 'Bearer <token>'"),
        ("Bearer", "malformed", "expected 'Bearer <token>'"),
        (INFER_TOKEN, "malformed", "expected 'Bearer <token>'"),
        (f"Bearer {UNKNOWN_TOKEN}", "unknown", "unknown bearer token"),
        (f"Bearer {INFER_TOKEN}x", "unknown", "unknown bearer token"),
    ],
)
def test_unusable_credentials_are_unauthenticated_with_a_reason(
    authority: TokenAuthority, value: str | None, reason: str, words: str
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        authority.authorize(value, "infer")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.reason == reason
    assert words in caught.value.message
    assert "token-0123456789" not in caught.value.message  # never echoes what was sent


def test_a_token_without_the_scope_is_permission_denied_naming_scopes_not_the_token(
    authority: TokenAuthority,
) -> None:
    with pytest.raises(PermissionDenied) as caught:
        authority.authorize(f"Bearer {INFER_TOKEN}", "admin")
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert caught.value.reason == "scope"
    assert "lacks scope 'admin'" in caught.value.message and "grants: infer" in caught.value.message
    assert INFER_TOKEN not in caught.value.message


def test_the_star_scope_grants_every_scope(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("root-token-0123456789abcdef *\n")
    authority = TokenAuthority.from_file(path)
    for scope in ("infer", "admin", "monitor", "mirror"):
        authority.authorize("Bearer root-token-0123456789abcdef", scope)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("short infer\n", "line 1: a token must be 16 to 512 characters, this one has 5"),
        ("# only comments\n\n", "holds no tokens"),
        ("abcdefghijklmnop0123 infer extra\n", "line 1: expected '<token> <scope>[,<scope>...]', got 3 field(s)"),
        ("abcdefghijklmnop0123\n", "got 1 field(s)"),
        ("\nabcdefghijklmnop0123 infer,predict\n", "line 2: unknown scope(s) 'predict'; use infer, admin"),
        (
            "abcdefghijklmnop0123 infer\nabcdefghijklmnop0123 admin\n",
            "line 2: this token is already on an earlier line",
        ),
        ("abcdefghijklmnop\u00e9123 infer\n", "printable ASCII"),
    ],
)
def test_a_bad_tokens_file_is_a_startup_error_naming_flag_file_and_line(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(StartupError) as caught:
        TokenAuthority.from_file(path)
    assert caught.value.message.startswith(f"--auth-tokens-file {path}")
    assert words in caught.value.message
    assert "abcdefghijklmnop0123" not in caught.value.message


def test_a_missing_tokens_file_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"--auth-tokens-file .*/absent does not exist") as caught:
        TokenAuthority.from_file(tmp_path / "absent")
    assert caught.value.exit_code == 2


def test_a_world_readable_tokens_file_is_used_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_tokens(tmp_path / "tokens")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="driftserve.core.auth"):
        authority = TokenAuthority.from_file(path)
    assert len(authority) == 4
    assert "readable by every user" in caplog.text and "chmod 600" in caplog.text


def test_a_client_token_file_gives_its_first_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"# the mirror's token\n\n{MIRROR_TOKEN}\n")
    assert read_token_file(path, "--mirror-token-file") == MIRROR_TOKEN
    assert bearer(MIRROR_TOKEN) == (("authorization", f"Bearer {MIRROR_TOKEN}"),)
    path.write_text("# nothing\n")
    with pytest.raises(StartupError, match=r"--mirror-token-file .* holds no token"):
        read_token_file(path, "--mirror-token-file")

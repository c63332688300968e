"""People who sign in to the console: passwords, roles, sessions.

A password is kept as ``scrypt$N$r$p$SALT$HASH`` (the stdlib's memory-hard KDF, a random
16-byte salt, the parameters stored with the hash so that they can be raised later
without locking anyone out). A session id is 256 random bits handed to the browser once;
the store keeps only its sha256, like API tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from cronwatch.core.errors import ValidationError

ROLES = ("admin", "viewer")
# 32 MiB and ~0.1 s a hash on this machine's cores: dear for a guesser, cheap for a sign-in
SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 15, 8, 1
PASSWORD_MIN = 8
PASSWORD_MAX = 1024  # scrypt takes any length; a megabyte "password" is only a cost
SESSION_TTL = 12 * 3600.0


USER_RULE = "1-100 letters, digits and . _ @ + -, starting with a letter or digit"
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


def validate_user_name(name: str) -> str:
    if not _USER_NAME.fullmatch(name):
        raise ValidationError(f"invalid user name {name!r}: {USER_RULE}")
    return name


def validate_role(role: str) -> str:
    if role not in ROLES:
        raise ValidationError(f"invalid role {role!r}: expected admin or viewer")
    return role


def validate_password(password: str) -> str:
    if len(password) < PASSWORD_MIN:
        raise ValidationError(f"the password is too short: at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise ValidationError(f"the password is too long: at most {PASSWORD_MAX} characters")
    return password


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8", "surrogateescape"), salt=salt, n=n, r=r, p=p,
        maxmem=256 * n * r + (1 << 20), dklen=32,
    )  # fmt: skip


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = base64.b64encode
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{b64(salt).decode()}${b64(digest).decode()}")  # fmt: skip


# Checked against when the user does not exist, so that an unknown name takes as long as
# a wrong password and the timing does not tell which names exist.
_DUMMY = hash_password(secrets.token_urlsafe(16))


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches ``stored`` (constant time; None: no such user, still
    paying for one hash)."""
    try:
        scheme, n, r, p, salt, digest = (stored or _DUMMY).split("$")
        if scheme != "scrypt":
            return False
        got = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):  # a damaged hash never signs anyone in
        return False
    return hmac.compare_digest(got, base64.b64decode(digest)) and stored is not None


def add_user(store: Any, name: str, *, role: str, password: str, now: float) -> None:
    store.create_user(validate_user_name(name), role=validate_role(role),
                      password_hash=hash_password(validate_password(password)), now=now)  # fmt: skip


def session_digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def new_session(store: Any, user: str, *, now: float, ttl: float = SESSION_TTL) -> tuple[str, str]:
    """Start a session: (the id for the cookie, its CSRF token)."""
    session_id = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    store.create_session(session_digest(session_id), user, csrf=csrf, now=now,
                         expires_at=now + ttl)  # fmt: skip
    return session_id, csrf

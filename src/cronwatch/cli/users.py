"""``cronwatch user``: the people who sign in to the console (``cronwatch serve``)."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from typing import Any

from cronwatch.app.users import (
    ROLES,
    hash_password,
    validate_password,
    validate_role,
    validate_user_name,
)
from cronwatch.cli.commands import add_common
from cronwatch.core.errors import ValidationError
from cronwatch.core.values import format_time
from cronwatch.store import open_store


def register(sub: Any, command: Any) -> None:
    p = command(sub, "user", cmd_user_help, "manage the people who sign in to the console",
                "cronwatch user add alice --role admin")  # fmt: skip
    usub = p.add_subparsers(title="user commands", metavar="ACTION")
    u = command(usub, "add", cmd_user_add,
                "add a user (the password is asked for, or read from stdin)",
                "cronwatch user add alice --role admin\n"
                "echo \"$PASSWORD\" | cronwatch user add ci-viewer --password-stdin")  # fmt: skip
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=ROLES, default="admin",
                   help="admin: may change things; viewer: reads everything but secrets "
                        "(default admin)")  # fmt: skip
    _password_flag(u)
    add_common(u, json_flag=False)
    u = command(usub, "passwd", cmd_user_passwd,
                "set a user's password (signs the user out everywhere)",
                "cronwatch user passwd alice")  # fmt: skip
    u.add_argument("name", metavar="NAME")
    u.add_argument("--role", choices=ROLES, help="change the role too")
    _password_flag(u)
    add_common(u, json_flag=False)
    u = command(usub, "rm", cmd_user_rm, "remove a user and end their sessions",
                "cronwatch user rm alice")  # fmt: skip
    u.add_argument("name", metavar="NAME")
    add_common(u, json_flag=False)
    u = command(usub, "list", cmd_user_list, "list users (never their passwords)",
                "cronwatch user list")  # fmt: skip
    add_common(u)
    add_common(p, json_flag=False)


def _password_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from standard input (its first line) instead of "
                        "asking for it")  # fmt: skip


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return validate_password(line.rstrip("\r\n"))
    if not sys.stdin.isatty():
        raise ValidationError("no terminal to ask for the password on: use --password-stdin")
    try:
        first = getpass.getpass("Password: ")
        validate_password(first)
        if getpass.getpass("Again: ") != first:
            raise ValidationError("the passwords differ")
    except (EOFError, KeyboardInterrupt):
        raise ValidationError("no password given") from None
    return first


def cmd_user_help(args: argparse.Namespace) -> int:
    sys.stderr.write("cronwatch: user needs an action: add, passwd, rm or list (see --help)\n")
    return 2


def cmd_user_add(args: argparse.Namespace) -> int:
    name = validate_user_name(args.name)
    role = validate_role(args.role)
    with open_store(getattr(args, "db", None)) as store:
        if store.get_user(name) is not None:
            raise ValidationError(f"a user named {name!r} already exists")
        digest = hash_password(_password(args))
        store.create_user(name, role=role, password_hash=digest, now=time.time())
    sys.stderr.write(f"cronwatch: user {name} ({role}) added; sign in at the server's /\n")
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    with open_store(getattr(args, "db", None)) as store:
        if store.get_user(args.name) is None:
            raise ValidationError(f"unknown user {args.name!r}")
        digest = hash_password(_password(args))
        store.set_user(args.name, password_hash=digest,
                       role=None if args.role is None else validate_role(args.role))  # fmt: skip
    return 0


def cmd_user_rm(args: argparse.Namespace) -> int:
    with open_store(getattr(args, "db", None)) as store:
        store.delete_user(args.name)
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    with open_store(getattr(args, "db", None)) as store:
        users = store.list_users()
    if getattr(args, "json", False):
        from cronwatch.cli.commands import emit_json

        emit_json(users)
        return 0
    for u in users:
        print(f"{u['name']}\t{u['role']}\tcreated {format_time(u['created_at'])}\t"
              f"last sign-in {format_time(u['last_login_at'])}")  # fmt: skip
    return 0

"""Command-line entry points: ``cronwatch`` and ``job-watch`` (the same program).

The wrapper forms (``run NAME -- CMD`` and ``--name NAME CMD``) take a fast path that
imports nothing but ``os`` and ``sys`` before the child starts; every other command goes
through argparse and the store.
"""

from __future__ import annotations

import sys


def _name_form(argv: list[str]) -> bool:
    """True for ``[--db X ...] --name NAME CMD...``: --name before the first bare word (an
    unknown option's value aside: `job-watch --bogus VALUE --name NAME CMD` runs CMD)."""
    from cronwatch.wrapper.options import VALUED, name_follows, unknown_option

    skip = False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == "--name" or a.startswith("--name="):
            return True
        if a == "--":
            return False
        if a == "-" or not a.startswith("-"):
            return i > 0 and unknown_option(argv[i - 1]) and name_follows(argv, i + 1)
        skip = a in VALUED
    return False


def _global_options_then_run(argv: list[str]) -> list[str] | None:
    """``--db X [--json] run NAME -- CMD`` as ``run --db X [--json] NAME -- CMD``: the
    options every command takes before its name, here before ``run``. Without this,
    argparse would read ``run`` as the help-only subcommand and CMD would never run."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--db":
            i += 2
        elif a.startswith("--db=") or a == "--json":
            i += 1
        else:
            break
    if 0 < i < len(argv) and argv[i] == "run":
        return ["run", *argv[:i], *argv[i + 1 :]]
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0].startswith("--") and (moved := _global_options_then_run(args)):
        args = moved
    try:
        if args and args[0] == "run":
            if not _help_requested(args[1:], name_form=False):
                return _wrap(args[1:], name_form=False, argv=argv)
            args = ["run", "--help"]  # `run NAME -h`: argparse would take -h as CMD
        elif _name_form(args):
            if not _help_requested(args, name_form=True):
                return _wrap(args, name_form=True, argv=argv)
            args = ["run", "--help"]  # the wrapper's options, with both forms' examples
        from cronwatch.cli.commands import dispatch

        return _exit(dispatch(args), argv)
    except KeyboardInterrupt:
        sys.stderr.write("cronwatch: interrupted\n")
        return _exit(130, argv)
    except BrokenPipeError:  # `cronwatch history x | head`
        return _exit(0, argv)


def _wrap(args: list[str], *, name_form: bool, argv: list[str] | None) -> int:
    if argv is None:  # a wrapper process of its own (not a call from Python, as in tests)
        import gc

        # Short-lived, and it makes no garbage cycles worth collecting: the collector's
        # passes over the objects that our imports create cost ~1.5 ms of every run.
        gc.disable()
    from cronwatch.wrapper.runner import main as run_main

    code = run_main(args, name_form=name_form, own_process=argv is None)
    return _exit(code, argv, wrapper=True)


def _help_requested(args: list[str], *, name_form: bool) -> bool:
    """-h/--help among our own options; after the command starts it is the command's
    (`job-watch --name disk-usage df -h /`)."""
    from cronwatch.wrapper.options import help_requested

    return help_requested(args, name_form=name_form)


def _exit(code: int, argv: list[str] | None, *, wrapper: bool = False) -> int:
    if argv is not None:  # called from Python (tests): just return
        return code
    try:
        sys.stdout.flush()
    except Exception:
        pass
    if wrapper:
        # The run is recorded, the store closed, the dashboard requested: what is left is
        # the interpreter's teardown (freeing every module, ~3-4 ms), which the job's
        # scheduler would wait for and nobody needs. Exit as soon as stderr is flushed too.
        import os

        try:
            sys.stderr.flush()
        except Exception:
            pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()

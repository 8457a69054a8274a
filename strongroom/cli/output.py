"""What every verb shares: the parser class, the exit-code epilog, the --json envelope,
--quiet, progress, tables and the deprecation warnings.

The contract, on every verb:

  exit codes  0 ok, 1 warning (done, with something to look at; also "nothing to
              verify"), 2 error, 3 incomplete (some items failed, the rest were done),
              11 locked (another run holds the lock), 64 usage error (the command line
              itself is wrong: nothing was done, and no JSON is printed)
  --json      one JSON object on stdout: {"result": "ok|warning|error|incomplete|locked",
              "exit_code": N, "message": "one line", ...the verb's own keys}; an error
              prints it too (result error, the message), with the message on stderr as well
  --quiet     no summaries or tables for people, no progress; errors and warnings still go
              to stderr, and --json still prints its object
  progress    on stderr, only when stderr is a terminal and --quiet is not given
"""

import argparse
import json
import re
import sys

from ..core.errors import ERROR, INCOMPLETE, LOCKED, OK, WARNING
from ..core.formats import human_bytes, render

# every verb's tables and sizes come from here (core.formats), with the rest of its output
__all__ = ["EPILOG", "NOTHING_TO_VERIFY", "RESULTS", "USAGE", "UsageParser", "add_to",
           "common", "deprecated", "emit", "envelope", "epilog", "error", "group", "human",
           "human_bytes", "one_line", "progress", "progress_on", "render", "restore_target",
           "say", "tell", "usage_error", "verb", "warn", "write_json"]

USAGE = 64  # EX_USAGE (sysexits.h): argparse's own 2 would read as "error"
RESULTS = {OK: "ok", WARNING: "warning", ERROR: "error", INCOMPLETE: "incomplete",
           LOCKED: "locked"}
EXIT_CODES = ("exit codes: 0 ok, 1 warning (done, with something to look at; nothing to "
              "verify is 1 on every verify verb), 2 error, 3 incomplete (some items failed, "
              "the rest were done), 11 locked by another run, 64 usage error. --json prints "
              "one object: result, exit_code, message and the verb's own keys")
EPILOG = EXIT_CODES
NOTHING_TO_VERIFY = "nothing to verify"
# per group (its prog): the names kept out of --help and of the list a wrong verb prints
# (verbs git calls, old names still accepted)
HIDDEN = {}


def epilog(meaning=None):
    """The exit-code epilog, with what 1 or 2 means for this verb when it says more."""
    return EXIT_CODES + (f". Here: {meaning}" if meaning else "")


class UsageParser(argparse.ArgumentParser):
    """argparse, but a usage error exits 64 (EX_USAGE), never 2 (which means error)."""

    def error(self, message):
        hidden = HIDDEN.get(self.prog, ())
        if hidden and "invalid choice" in message:
            message = re.sub(r"\(choose from (.*)\)", lambda m: "(choose from " + ", ".join(
                c for c in m.group(1).split(", ") if c.strip("'") not in hidden) + ")",
                message)
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def hide(sub, name):
    HIDDEN.setdefault(sub._prog_prefix, set()).add(name)


def group(sub, name, help=None, description=None, **kw):
    """A command group (NAME VERB ...); without help it is hidden from --help."""
    kwargs = {"help": help} if help is not None else {}
    if help is None:
        hide(sub, name)
    p = sub.add_parser(name, description=description or help, epilog=kw.pop("epilog", EPILOG),
                       **kwargs, **kw)
    p.set_defaults(_parser=p)
    return p, p.add_subparsers(dest="verb", required=True, metavar="VERB",
                               parser_class=UsageParser)


def verb(sub, name, help=None, epilog=EPILOG, **kw):
    """A verb's parser with --json and --quiet; without help it is hidden from --help."""
    kwargs = {"help": help} if help is not None else {}
    if help is None:
        hide(sub, name)
    p = sub.add_parser(name, description=kw.pop("description", help), epilog=epilog,
                       **kwargs, **kw)
    common(p)
    return p


def common(p):
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (result, exit_code, message, ...) on stdout")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no summary, table or progress; errors and warnings still go to "
                        "stderr, --json still prints")
    p.set_defaults(_parser=p)


def usage_error(args, message):
    """Exit 64 with the verb's usage, as argparse does for what it checks itself."""
    args._parser.error(message)


# --- output -------------------------------------------------------------------------------


def one_line(text):
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return "; ".join(lines)


def envelope(code, message, data=None):
    env = dict(data or {})
    env["result"] = RESULTS.get(code, "error")
    env["exit_code"] = code
    env["message"] = one_line(message if message is not None else env.get("message", ""))
    return env


def write_json(obj):
    json.dump(obj, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def emit(args, code, message, data=None):
    """Under --json, print the envelope; returns code, so a verb ends `return emit(...)`."""
    if getattr(args, "json", False):
        write_json(envelope(code, message, data))
    return code


def human(args):
    """True when people get the summaries and tables: neither --json nor --quiet."""
    return not getattr(args, "json", False) and not getattr(args, "quiet", False)


def say(args, *lines):
    """Human output on stdout (none under --json or --quiet)."""
    if human(args):
        for line in lines:
            if line is not None:
                print(line)


def tell(args, *lines):
    """Human summaries that go to stderr (stdout carries the verb's product)."""
    if human(args):
        for line in lines:
            print(line, file=sys.stderr)


def warn(text, prefix="warning: "):
    """Always on stderr: a warning is something to look at, --quiet or not."""
    print(f"{prefix}{text}", file=sys.stderr)


def error(text):
    print(f"strongroom: error: {text}", file=sys.stderr)


def progress_on(args):
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def progress(args, text):
    """One progress line on stderr, for a person watching a terminal."""
    if progress_on(args):
        sys.stderr.write(f"strongroom: {text}\n")
        sys.stderr.flush()


def deprecated(old, new):
    print(f'strongroom: warning: "{old}" is now "{new}"; the old name will be removed in a '
          "later release", file=sys.stderr)


# --- restore targets: --to DIR on every restore verb ---------------------------------------

TO_HELP = "the directory to restore into (required)"


def add_to(p, detail, old="--target"):
    """--to DIR (and the old spelling, still accepted with a warning, out of --help)."""
    p.add_argument("--to", metavar="DIR", help=f"{TO_HELP}: {detail}")
    if old:
        p.add_argument(old, dest="to_old", metavar="DIR", help=argparse.SUPPRESS)
        p.set_defaults(_to_old_name=old)


def restore_target(args):
    """The --to DIR of a restore verb; the old spelling works and warns."""
    old_name = getattr(args, "_to_old_name", "--target")
    old = getattr(args, "to_old", None)
    if old and args.to:
        usage_error(args, f"give --to DIR once ({old_name} is its old name)")
    if old:
        deprecated(old_name, "--to")
        return old
    if not args.to:
        usage_error(args, "--to DIR is required (the directory to restore into)")
    return args.to

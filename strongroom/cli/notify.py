"""`strongroom notify test`: a test message to every notification target."""

from pathlib import Path

from ..core.errors import ERROR, OK, WARNING
from . import output


def cmd_notify_test(args):
    from .. import notify

    targets, results, notes = notify.test_all(args.config_dir, args.severity)
    failed = [r["target"] for r in results if not r["delivered"]]
    for note in notes:
        output.warn(note)
    if not targets:
        output.say(args, f"No notification targets in {Path(args.config_dir) / 'notify.yml'}.")
    for r in results:
        output.say(args, f"{r['target']}: {'delivered' if r['delivered'] else 'FAILED'}")
    if failed:
        message = f"notification failed for: {', '.join(failed)}"
        output.error(message)
        code = ERROR
    elif not targets:
        code, message = WARNING, (f"no notification targets in "
                                  f"{Path(args.config_dir) / 'notify.yml'}")
    else:
        code = WARNING if notes else OK
        message = f"delivered to {len(results)} target(s)" + (
            f"; {len(notes)} note(s)" if notes else "")
    return output.emit(args, code, message, {"targets": len(targets), "results": results,
                                             "notes": notes, "failed": failed})


def add_parser(sub):
    _, ntsub = output.group(sub, "notify", help="notification targets "
                                               "(<config-dir>/notify.yml)")
    ntt = output.verb(ntsub, "test", help="send a test message to every target",
                      epilog=output.epilog("1 when there is no target or a note about one; "
                                           "2 when a delivery failed"))
    ntt.add_argument("--severity", choices=["info", "success", "warning", "error"],
                     default="info", help="severity of the test message (default info)")
    ntt.set_defaults(func=cmd_notify_test)

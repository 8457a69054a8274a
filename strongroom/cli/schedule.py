"""`strongroom schedule explain SPEC`: every rendering of a schedule and its next times."""

import json

from ..core.errors import OK
from . import output


def cmd_schedule_explain(args):
    from datetime import datetime

    from .. import schedule

    spec = args.spec
    if args.jitter:
        spec = schedule.with_jitter(spec, args.seed, args.jitter)
    out = schedule.explain(spec, datetime.now().replace(second=0, microsecond=0), args.count)
    if args.spec != spec:
        out["requested"] = args.spec
    message = f"schedule: {spec}; next {out['next'][0] if out['next'] else 'never'}"
    if output.human(args):
        print(f"schedule: {spec}" + (f"   (from '{args.spec}', jitter for {args.seed})"
                                     if args.spec != spec else ""))
        print(f"period:   {out['period_seconds'] // 60} min between runs at most")
        for key in ("cron", "anacron", "systemd", "launchd"):
            value = out[key]
            if value is None:
                print(f"{key}: refused: {out[key + '_refused']}")
            elif key == "cron":
                print(f"cron:     {value}")
            elif key == "anacron":
                print(f"anacron:  period {value['period']}, delay {value['delay']} min")
            else:
                print(f"{key}:  {json.dumps(value)}")
        print("next:     " + "\n          ".join(out["next"]))
    return output.emit(args, OK, message, out)


def add_parser(sub):
    _, scsub = output.group(sub, "schedule", help="schedule specs and their renderings")
    ex = output.verb(scsub, "explain", help="every rendering of a spec and its next times",
                     epilog=output.epilog() + ". Specs: 'daily HH:MM', 'weekly DAY HH:MM', "
                            "'monthly D HH:MM', 'every Nm', 'every Nh', or a 5-field cron "
                            "expression")
    ex.add_argument("spec", help="the schedule spec (quote it)")
    ex.add_argument("--count", type=int, default=5, help="how many next times (default 5)")
    ex.add_argument("--jitter", type=int, default=0, metavar="MINUTES",
                    help="move the time later by a stable per-host offset below MINUTES")
    ex.add_argument("--seed", default="", help="the host name the jitter is seeded by")
    ex.set_defaults(func=cmd_schedule_explain)

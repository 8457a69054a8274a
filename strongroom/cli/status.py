"""`strongroom status`: every job's last result, age, next due and staleness."""

from pathlib import Path

from ..core.errors import ERROR, OK, WARNING
from . import jobfile, output
from .output import render


def cmd_status(args):
    from .. import status

    paths_ = jobfile.paths(args)
    rows = status.rows(paths_, factor=args.stale_factor)
    if args.prometheus:
        status.write_prometheus(args.prometheus, rows)
    sent = status.notify_stale(paths_, rows) if args.notify else []
    stale = [r["job"] for r in rows if r["stale"]]
    invalid = [r for r in rows if not r["valid"]]
    where = Path(args.config_dir) / "jobs"
    if not rows:
        message = f"No jobs in {where}."
        output.say(args, message)
    else:
        message = (f"{len(rows)} job(s)" + (f"; stale: {', '.join(stale)}" if stale
                                            else "; none stale")
                   + (f"; invalid: {', '.join(r['job'] for r in invalid)}" if invalid else ""))
        output.say(args, render(
            ["JOB", "RESULT", "WHEN", "AGE", "DURATION", "NEXT DUE", "STALE"],
            [[r["job"], r.get("result", "INVALID"), r.get("finished") or "-",
              status.human_age(r.get("age_seconds")),
              f"{r['duration_seconds']}s" if r.get("duration_seconds") is not None
              else "-", "due now" if r.get("due") else (r.get("next_due") or "-"),
              "STALE" if r["stale"] else "no"] for r in rows]))
        for n in sent:
            if not n["delivered"]:
                output.say(args, f"stale alert to {n['target']}: FAILED")
    for r in invalid:  # the table says INVALID; this says why, and which file
        output.error(r["error"])
    code = ERROR if invalid else WARNING if (args.stale and stale) else OK
    return output.emit(args, code, message, {"jobs": rows, "stale": stale,
                                             "notifications": sent})


def add_parser(sub):
    st = output.verb(sub, "status", help="every job's last result, age, next due, staleness",
                     epilog=output.epilog("1 with --stale when a job is stale; 2 when a job "
                                          "file is invalid"))
    st.add_argument("--stale", action="store_true",
                    help="exit 1 when any job had no success within its stale limit")
    st.add_argument("--stale-factor", type=float, default=2.0, metavar="F",
                    help="stale after F x the job's period without a success (default 2)")
    st.add_argument("--notify", action="store_true",
                    help="send the backup_stale alert for every stale job")
    st.add_argument("--prometheus", metavar="PATH",
                    help="also write a node_exporter textfile (written atomically)")
    st.set_defaults(func=cmd_status)

"""`strongroom status`: every job's last result, age, next due and staleness; the same as
a report page (--html), also for rows read from elsewhere (--from-json: a fleet's)."""

import sys
from pathlib import Path

from ..core.errors import ERROR, OK, WARNING
from . import jobfile, output
from .output import render


def cmd_status(args):
    from .. import status
    from ..status import report

    paths_ = jobfile.paths(args)
    if args.from_json:
        if args.prometheus or args.notify:  # both speak for this host's own jobs
            output.usage_error(args, "--from-json takes no --prometheus or --notify: they "
                                     "are about this host's jobs, not rows read elsewhere")
        rows = report.load_rows(args.from_json, sys.stdin)
    else:
        rows = status.rows(paths_, factor=args.stale_factor)
    if args.prometheus:
        status.write_prometheus(args.prometheus, rows)
    if args.html:
        report.write(args.html, rows, paths_.config_dir)
    sent = status.notify_stale(paths_, rows) if args.notify else []
    stale = [r["job"] for r in rows if r.get("stale")]
    invalid = [r for r in rows if not r.get("valid", True)]
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
              report.age(r.get("age_seconds")),  # a row read from elsewhere may hold junk
              f"{r['duration_seconds']}s" if r.get("duration_seconds") is not None
              else "-", "due now" if r.get("due") else (r.get("next_due") or "-"),
              "STALE" if r.get("stale") else "no"] for r in rows]))
        if args.html:
            output.say(args, f"report written to {args.html}")
        for n in sent:
            if not n["delivered"]:
                output.say(args, f"stale alert to {n['target']}: FAILED")
    for r in invalid:  # the table says INVALID; this says why, and which file
        output.error(r.get("error") or f"{r['job']}: invalid job file")
    code = ERROR if invalid else WARNING if (args.stale and stale) else OK
    return output.emit(args, code, message, {"jobs": rows, "stale": stale,
                                             "notifications": sent,
                                             **({"html": str(args.html)} if args.html
                                                else {})})


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
    st.add_argument("--html", metavar="FILE",
                    help="also write the report page: one self-contained HTML file with "
                         "every job, its 30-day history, restore drills, re-verification "
                         "and heartbeats (written atomically)")
    st.add_argument("--from-json", metavar="ROWS",
                    help="read the rows from ROWS ('-': stdin), a list of status rows or "
                         "the output of `status --json`, instead of this host's jobs (how "
                         "playbooks/status.yml renders a fleet's page)")
    st.set_defaults(func=cmd_status)

"""`strongroom ping JOB [--signal start|success|fail]`: check a job's heartbeat from the
host, as `notify test` checks the notification targets.

One signal is sent now, with a fresh run id, the same way a run sends it (the same
attempts and timeouts, the URL read from the job file or its url_file). The URL is shown
as scheme://host/… only. Nothing is recorded: the status keeps what the last run sent.
A success signal tells the monitor the job is healthy, so send it only when it is.
"""

from pathlib import Path

from ..core.errors import ERROR, OK, ConfigError
from ..jobs import config
from . import output

SIGNALS = ("start", "success", "fail")


def cmd_ping(args):
    from .. import ping

    job = config.load_job(args.config_dir, args.job_name)
    for line in ping.exposed(job, Path(args.config_dir) / "jobs" / f"{job['name']}.yml"):
        output.warn(line.removeprefix("warning: "))
    try:
        target, sent = ping.test_signal(job, args.signal)
    except ping.PingConfigError as exc:
        raise ConfigError(str(exc)) from None
    data = {"job": job["name"], "signal": args.signal, "style": target.style,
            "target": target.shown, **sent.as_dict()}
    if sent.delivered:
        message = f"{job['name']}: {args.signal} signal delivered to {target.shown}" + (
            f" (attempt {sent.attempts})" if sent.attempts > 1 else "")
        output.say(args, message)
        return output.emit(args, OK, message, data)
    message = (f"{job['name']}: {args.signal} signal to {target.shown} FAILED after "
               f"{sent.attempts} attempt{'s' if sent.attempts != 1 else ''}: {sent.error}")
    output.error(message)
    return output.emit(args, ERROR, message, data)


def add_parser(sub):
    p = output.verb(sub, "ping", help="send one heartbeat signal of a job now (its `ping`)",
                    description=__doc__.split("\n\n")[1].replace("\n", " "),
                    epilog=output.epilog("2 when the job has no usable ping or the signal "
                                         "was not delivered"))
    p.add_argument("job_name", metavar="JOB", help="job name: <config-dir>/jobs/JOB.yml")
    p.add_argument("--signal", choices=SIGNALS, default="success",
                   help="which signal (default success; start exists for healthchecks only)")
    p.set_defaults(func=cmd_ping)

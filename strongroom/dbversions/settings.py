"""The settings of one versioned database, from plain options: what `strongroom db` and the
db_backup job both build their DbSync from.

Strongest first: the options given (the command line laid over the job file), then the
environment: R2_ACCOUNT_ID, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, R2_BUCKET_NAME
(Cloudflare R2), or AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_BUCKET_NAME, AWS_REGION
and optionally AWS_ENDPOINT_URL (S3 or any S3-compatible store). Keys from the environment
reach rclone through its own environment (RCLONE_CONFIG_...), never its arguments.
"""

import os
from pathlib import Path

from ..core.errors import StrongroomError

ENV_REMOTE = "strongroomenv"


def env_remote(environ=None):
    """(REMOTE:PATH, extra rclone environment) from R2_* or AWS_* variables, or (None, {})."""
    e = environ if environ is not None else os.environ
    pre = f"RCLONE_CONFIG_{ENV_REMOTE.upper()}_"
    if all(e.get(k) for k in ("R2_ACCOUNT_ID", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY",
                               "R2_BUCKET_NAME")):
        return f"{ENV_REMOTE}:{e['R2_BUCKET_NAME']}", {
            pre + "TYPE": "s3", pre + "PROVIDER": "Cloudflare",
            pre + "ACCESS_KEY_ID": e["R2_ACCESS_KEY_ID"],
            pre + "SECRET_ACCESS_KEY": e["R2_SECRET_ACCESS_KEY"],
            pre + "ENDPOINT": f"https://{e['R2_ACCOUNT_ID']}.r2.cloudflarestorage.com"}
    if all(e.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                               "AWS_BUCKET_NAME")):
        extra = {pre + "TYPE": "s3", pre + "ACCESS_KEY_ID": e["AWS_ACCESS_KEY_ID"],
                 pre + "SECRET_ACCESS_KEY": e["AWS_SECRET_ACCESS_KEY"],
                 pre + "REGION": e.get("AWS_REGION") or e.get("AWS_DEFAULT_REGION")
                 or "us-east-1",
                 pre + "PROVIDER": "Other" if e.get("AWS_ENDPOINT_URL") else "AWS"}
        if e.get("AWS_ENDPOINT_URL"):
            extra[pre + "ENDPOINT"] = e["AWS_ENDPOINT_URL"]
        return f"{ENV_REMOTE}:{e['AWS_BUCKET_NAME']}", extra
    return None, {}


def settings(options, config_dir, state_dir, environ=None):
    """The DbSync that options describe (db, remote, keep, host, rclone_config, retries,
    low_level_retries, ops_threshold, hours_threshold: a db_backup job's options, with the
    command line laid over them). The remote comes from the environment when not given."""
    from ..core.remote import Rclone, rclone_config
    from . import DbSync

    opts = dict(options or {})
    extra_env = {}
    if not opts.get("remote"):
        opts["remote"], extra_env = env_remote(environ)
    if not opts.get("db"):
        raise StrongroomError("--db FILE is required (or --job NAME)")
    if not opts.get("remote"):
        raise StrongroomError("--remote REMOTE:PATH is required (or --job NAME, or R2_* / "
                              "AWS_* variables: see `strongroom db --help`)")
    from ..jobs.schema import options as job_options

    d = job_options("db").defaults()  # a db job's defaults, from the job schema
    rc = Rclone(rclone_config(opts.get("rclone_config"), config_dir),
                retries=opts.get("retries", d["retries"]),
                low_level_retries=opts.get("low_level_retries", d["low_level_retries"]),
                extra_env=extra_env)
    from ..upload.seal import for_options

    sync = DbSync(opts["db"], opts["remote"], str(state_dir), rc, keep=opts.get("keep"),
                  host=opts.get("host"), ops_threshold=opts.get("ops_threshold"),
                  hours_threshold=opts.get("hours_threshold"))
    sync.seal = for_options(opts, config_dir, Path(state_dir) / "uploads")
    sync.identity = opts.get("identity")  # opens the sealed versions a restore fetches
    return sync


def tick_text(out):
    """What a tick that fired did, or None when it was not due."""
    if not out["backup"]:
        return None
    if out["backup"]["unchanged"]:
        return (f"unchanged ({out['reason']}): the newest version {out['backup']['key']} "
                "already holds this content; nothing uploaded")
    return f"backed up ({out['reason']}): {out['backup']['key']}"

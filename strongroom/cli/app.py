"""`strongroom ...`: the command the schedulers call and people type.

Tables for people, --json for machines, one contract on every verb (see output.py).
"""

import os
import signal
import sys

from .. import __version__
from ..core import paths
from ..core.errors import ERROR, WARNING, StrongroomError
from . import (
    backup,
    bisync,
    bundle,
    config,
    db,
    drill,
    key,
    manifest,
    notify,
    output,
    ping,
    restic,
    reverify,
    rollup,
    run,
    save,
    schedule,
    status,
    sync,
    upload,
)

# old command names: they still work, and say what they are now
DEPRECATED = {"backup": "snapshot", "save": "checkpoint save", "checkpoints": "checkpoint"}


# Locks and --wait, verb by verb. --wait SECONDS is offered exactly where a verb takes a
# lock (a verb that takes none refuses it, so nobody relies on a wait that never happens)
# and covers every lock that verb takes; a lock still held after it exits 11, naming the
# holder's PID and the lock file.
#
#   verb                               locks it takes                       --wait default
#   bundle sync|verify|restore|        the store's STORE/.strongroom.lock   0
#     consolidate
#   bundle list                        none                                 -
#   run JOB                            <state>/locks/JOB.lock, then what    0
#                                      the job type takes (below); one
#                                      deadline from the start for all of
#                                      them (a longer lock_wait in the job
#                                      file still applies to its lock)
#     bundle_sync                        the store's lock
#     restore_drill                      each store's lock (lock_wait, 300)
#     git_sync                           the repository's sync lock
#     snapshot                           DEST/.snapshot.lock (lock_wait, 0)
#     checkpoint                         DEST/.checkpoint.lock (lock_wait, 0)
#     daily, rollup                      DEST/.rollups.lock (lock_wait, 600)
#     bisync                             bisync.lock (lock_wait, 0)
#     db_backup                          the database's lock (600)
#     restic, status_check               none of ours (restic locks its own)
#   run --all                          each job's, in turn, as run JOB      0
#   drill                              each store's lock, in turn; each     300
#                                      waits up to --wait
#   sync push|pull|resolve|rollback    REPO/.git/strongroom/sync.lock       0
#   sync status, sync merge-driver     none (git runs the merge driver      -
#                                      inside a sync that holds the lock)
#   snapshot now (backup now)          DEST/.snapshot.lock                  job's lock_wait, 0
#   snapshot list|verify|restore|      none                                 -
#     prune|protect
#   checkpoint save (save)             DEST/.checkpoint.lock                job's lock_wait, 0
#   hook pre-push                      the snapshot's DEST/.snapshot.lock   job's lock_wait, 120
#   bisync                             <state>/bisync/JOB/bisync.lock       job's lock_wait, 0
#   db backup|restore|sync|tick        <state>/db/NAME-ID.lock              30
#   reverify JOB                       <state>/locks/JOB.lock               0
#   db list|status, checkpoint         none                                 -
#     list|verify, hook install|
#     uninstall, upload, rollup, restic
#     restore, manifest, jobs list,
#     status, notify test, schedule
#     explain, config, ping, key
def build_parser():
    parser = output.UsageParser(prog="strongroom", description=__doc__.splitlines()[0],
                                epilog=output.EPILOG)
    parser.add_argument("--version", action="version", version=f"strongroom {__version__}")
    parser.add_argument("--config-dir", default=None,
                        help="configuration directory (env STRONGROOM_CONFIG_DIR; default "
                             "/etc/strongroom as root, ~/.config/strongroom otherwise)")
    parser.add_argument("--state-dir", default=None,
                        help="state directory (env STRONGROOM_STATE_DIR; default "
                             "/var/lib/strongroom as root, ~/.local/state/strongroom "
                             "otherwise)")
    parser.add_argument("--log-dir", default=None,
                        help="job logs (env STRONGROOM_LOG_DIR; default <state-dir>/log when "
                             "the state dir is given, else /var/log/strongroom as root)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=output.UsageParser)
    for group in (bundle, run, drill, status, notify, schedule, manifest, sync, backup, save,
                  upload, rollup, bisync, restic, reverify, db, config, ping, key):
        group.add_parser(sub)
    return parser


def _terminate(signum, _frame):
    # unwinds like an error, so every temp folder and half-built restore is removed
    raise SystemExit(128 + signum)


def _failed(args, code, message):
    """An error the verb did not get to report: on stderr, and under --json as the object.
    A warning (an empty source: exit 1) is labelled as one."""
    if code == WARNING:
        output.warn(message, prefix="strongroom: warning: ")
    else:
        output.error(message)
    return output.emit(args, code, message)


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in DEPRECATED:  # stderr only: --json's stdout stays one object
        output.deprecated(args.command, DEPRECATED[args.command])
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _terminate)
    chosen_state = args.state_dir or os.environ.get("STRONGROOM_STATE_DIR")
    args.config_dir = args.config_dir or str(paths.config_dir())
    args.state_dir = args.state_dir or str(paths.state_dir())
    args.log_dir = args.log_dir or str(paths.log_dir(chosen_state))
    try:
        return args.func(args)
    except StrongroomError as exc:
        return _failed(args, exc.exit_code, str(exc))
    except BrokenPipeError:  # the reader went away (| head): nothing left to say
        return ERROR
    except OSError as exc:
        return _failed(args, ERROR, str(exc))
    except KeyboardInterrupt:
        print("strongroom: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

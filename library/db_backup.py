#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: db_backup
short_description: Versioned SQLite backups on object storage, and their smart sync
description:
  - With O(operation=backup), takes a consistent copy of O(db) through SQLite's online
    backup API, checks it with C(PRAGMA integrity_check), uploads it as a new version
    (C(backups/<db>/<UTC time>_<host>_<db>) plus a metadata object, each verified) and
    keeps the versions holding the newest O(keep) distinct contents. With
    O(only_if_changed), nothing is uploaded when the newest version already holds the
    same content, so a repeated run is not a change.
  - With O(operation=sync), pulls the newest version only when the local database has
    not changed since it was last synced, pushes local changes when the remote has not
    moved, and fails without changing anything when both changed. Offline, it warns and
    changes nothing.
  - With O(operation=status), reports versions and checksums; never a change.
  - Check mode reports what would happen and writes nothing. The same engine as
    C(strongroom db).
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.rclone
  - strongroom.backup.engine.transfer
  - strongroom.backup.engine.attributes
options:
  db:
    description: The SQLite database file.
    type: path
    required: true
  remote:
    description: Where versions live, C(REMOTE:PATH) (a remote of the rclone config).
    type: str
    required: true
  operation:
    description: What to do.
    type: str
    choices: [backup, sync, status]
    default: backup
  keep:
    description: Distinct contents kept, the newest first; a version holding the same
      content as a newer one takes no slot, and the newest are never pruned.
    type: int
    default: 10
  only_if_changed:
    description: With O(operation=backup), upload nothing when the newest version already
      holds this content.
    type: bool
    default: true
  host:
    description: This machine's name inside version keys (default the hostname).
    type: str
  state_dir:
    description:
      - Where the sync state lives (what was last synced, pending operations).
      - When unset, the engine's default for the user the module runs as, the same as the
        C(strongroom) command's C(--state-dir) on that host; C(STRONGROOM_STATE_DIR) when
        set, else C(/var/lib/strongroom) as root, else C($XDG_STATE_HOME/strongroom)
        (C(~/.local/state/strongroom)).
    type: path
attributes:
  check_mode:
    support: full
    details:
      - O(operation=backup) takes a consistent copy in a temporary folder beside O(db) to
        compare its content with the newest version's, then removes it; nothing is
        uploaded, pruned or recorded. O(operation=sync) reports the action it would take.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Back up the application database before the upgrade
  strongroom.backup.db_backup:
    db: /srv/app/data/app.db
    remote: offsite:app-db
    rclone_config: /etc/strongroom/rclone.conf
    bwlimit: 4M
    engine_venv: /opt/strongroom/venv

- name: Pull the newest version unless this copy changed too
  strongroom.backup.db_backup:
    db: /home/alice/notes.db
    remote: offsite:notes-db
    operation: sync
"""

RETURN = r"""
key:
  description:
    - The version uploaded (O(operation=backup), or a sync that pushed); for a backup that
      uploaded nothing, the newest version, which holds this content already.
  type: str
  returned: when a version was uploaded, or already held this content
  sample: 20261121T031500.000000Z_alpha_app.db
content_sha256:
  description: SHA-256 of the database's content (without SQLite's change counter).
  type: str
  returned: when a backup uploaded a version
size:
  description: Bytes of the version uploaded.
  type: int
  returned: when a backup uploaded a version
tables:
  description: Rows per table of the copy, as its integrity check counted them.
  type: dict
  returned: when a backup uploaded a version
reason:
  description: Why the version was made (C(ansible)).
  type: str
  returned: when a backup uploaded a version
pruned:
  description: Versions deleted after the upload (older than the newest O(keep) contents).
  type: list
  elements: str
  returned: when a backup uploaded a version
unchanged:
  description: Whether the newest version already held this content (always false here).
  type: bool
  returned: when a backup uploaded a version
replaces_unreadable:
  description: The newest version whose metadata could not be read, put under the new one.
  type: str
  returned: when a backup uploaded a version
action:
  description: For sync, none, adopt, pull, push or offline; conflict when it failed so.
  type: str
  returned: with operation=sync
head:
  description: For sync, the remote's newest version with readable metadata.
  type: str
  returned: with operation=sync, when the remote could be read
database:
  description: For status, the database file.
  type: str
  returned: with operation=status
remote:
  description: For status, where the versions live (C(REMOTE:PATH/backups/<db>)).
  type: str
  returned: with operation=status
pending_ops:
  description: For status, operations counted since the last backup.
  type: int
  returned: with operation=status
last_backup:
  description: For status, the last version this machine uploaded (key, at, reason).
  type: dict
  returned: with operation=status
current:
  description: For status, the version this machine last agreed with.
  type: str
  returned: with operation=status
local_sha256:
  description: For status, the local database's content SHA-256 (null when it is absent).
  type: str
  returned: with operation=status
versions:
  description: For status, how many versions the remote holds (null when offline).
  type: int
  returned: with operation=status
newest:
  description: For status, the newest version with readable metadata.
  type: str
  returned: with operation=status, when the remote could be read
remote_sha256:
  description: For status, the content SHA-256 of that newest version.
  type: str
  returned: with operation=status
unreadable:
  description: For status, the versions newer than that one without readable metadata.
  type: list
  elements: dict
  returned: with operation=status, when the remote could be read
offline:
  description: For status, true when the remote could not be reached.
  type: bool
  returned: with operation=status, when the remote could not be reached
in_sync:
  description: For status, whether the local content is the newest version's.
  type: bool
  returned: with operation=status
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)

# what a backup that uploaded a version returns (RETURN), besides changed
BACKUP_KEYS = ("key", "content_sha256", "size", "tables", "reason", "pruned", "unchanged",
               "replaces_unreadable")


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            db=dict(type="path", required=True),
            remote=dict(type="str", required=True),
            operation=dict(type="str", default="backup", choices=["backup", "sync", "status"]),
            keep=dict(type="int", default=10),
            only_if_changed=dict(type="bool", default=True),
            host=dict(type="str"),
            state_dir=dict(type="path"),
            rclone_config=dict(type="path"),
            bwlimit=dict(type="str"),
            retries=dict(type="int", default=3),
            low_level_retries=dict(type="int", default=3),
        ),
        supports_check_mode=True,
    )
    require_engine(module, "to back up databases")
    from strongroom.core import paths
    from strongroom.core.errors import StrongroomError
    from strongroom.core.remote import Rclone
    from strongroom.dbversions import Conflict, DbSync

    p = module.params
    # the default is resolved on the host, for the user the module runs as: a user install
    # keeps its state in its own state directory, as the strongroom command does
    d = DbSync(p["db"], p["remote"], p["state_dir"] or paths.state_dir(),
               Rclone(p["rclone_config"], bwlimit=p["bwlimit"], retries=p["retries"],
                      low_level_retries=p["low_level_retries"]),
               keep=p["keep"], host=p["host"])
    try:
        if p["operation"] == "status":
            module.exit_json(changed=False, **d.status())
        if p["operation"] == "sync":
            if module.check_mode:
                action, head, why = d.plan_sync()
                module.exit_json(changed=action != "none", action=action, head=head,
                                 msg=f"would {action}: {why}")
            with d.lock(600):
                out = d.sync()
            if out["action"] == "offline":
                module.warn(out["message"])
            res = {"action": out["action"], "msg": out["message"]}
            if "head" in out:
                res["head"] = out["head"]
            if out.get("key"):
                res["key"] = out["key"]
            module.exit_json(changed=out["changed"], **res)
        if module.check_mode:
            held = d.listing()
            newest = max(held, default=None)
            # as backup() judges it: a newest version without readable metadata holds
            # nothing we can vouch for, so a real run would put a new one on top
            meta = d.read_metadata(newest, held[newest])[0] if newest else None
            if p["only_if_changed"] and meta and meta["content_sha256"] == d.local_sha():
                module.exit_json(changed=False, key=newest,
                                 msg=f"the newest version {newest} holds this content")
            module.exit_json(changed=True, msg="would upload a new version")
        with d.lock(600):
            out = d.backup(reason="ansible", only_if_changed=p["only_if_changed"])
        if out["unchanged"]:
            module.exit_json(changed=False, key=out["key"],
                             msg=f"the newest version {out['key']} holds this content")
        module.exit_json(changed=True, **{k: out[k] for k in BACKUP_KEYS if k in out})
    except Conflict as exc:
        module.fail_json(msg=str(exc), action="conflict")
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()

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
requirements:
  - rclone
  - the strongroom engine importable by the module's Python (installed by the strongroom
    role; point C(ansible_python_interpreter) at its virtualenv)
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
  rclone_config:
    description: rclone.conf to use.
    type: path
notes:
  - Secrets stay in the rclone config (0600); they are never module arguments.
"""

EXAMPLES = r"""
- name: Back up the application database before the upgrade
  db_backup:
    db: /srv/app/data/app.db
    remote: offsite:app-db
    rclone_config: /etc/strongroom/rclone.conf
  vars:
    ansible_python_interpreter: /opt/strongroom/venv/bin/python
"""

RETURN = r"""
key:
  description: The version uploaded (backup, or a sync that pushed).
  type: str
  returned: when a version was uploaded
action:
  description: For sync, none, adopt, pull, push or offline.
  type: str
  returned: with operation=sync
versions:
  description: For status, how many versions the remote holds.
  type: int
  returned: with operation=status
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from strongroom.core import paths
    from strongroom.core.errors import StrongroomError
    from strongroom.core.remote import Rclone
    from strongroom.dbversions import Conflict, DbSync

    HAS_STRONGROOM = True
    IMPORT_ERROR = None
except ImportError:
    HAS_STRONGROOM = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
            db=dict(type="path", required=True),
            remote=dict(type="str", required=True),
            operation=dict(type="str", default="backup", choices=["backup", "sync", "status"]),
            keep=dict(type="int", default=10),
            only_if_changed=dict(type="bool", default=True),
            host=dict(type="str"),
            state_dir=dict(type="path"),
            rclone_config=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    if not HAS_STRONGROOM:
        module.fail_json(msg=missing_required_lib(
            "strongroom", reason="to back up databases",
            url="run playbooks/site.yml to install the engine, and set "
                "ansible_python_interpreter to its virtualenv's python"),
            exception=IMPORT_ERROR)
    p = module.params
    # the default is resolved on the host, for the user the module runs as: a user install
    # keeps its state in its own state directory, as the strongroom command does
    d = DbSync(p["db"], p["remote"], p["state_dir"] or paths.state_dir(),
               Rclone(p["rclone_config"]),
               keep=p["keep"], host=p["host"])
    try:
        if p["operation"] == "status":
            module.exit_json(changed=False, **d.status())
        if p["operation"] == "sync":
            if module.check_mode:
                action, head, why = d.plan_sync()
                module.exit_json(changed=action != "none", action=action, head=head, msg=why)
            with d.lock(600):
                out = d.sync()
            if out["action"] == "offline":
                module.warn(out["message"])
            module.exit_json(changed=out["changed"], action=out["action"],
                             key=out.get("key"), msg=out["message"])
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
        module.exit_json(changed=True, **out)
    except Conflict as exc:
        module.fail_json(msg=str(exc), action="conflict")
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()

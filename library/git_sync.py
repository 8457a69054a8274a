#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: git_sync
short_description: Keep two machines' copies of a git repository in step, safely
description:
  - One side of a two-machine sync through a git remote, guarded by a snapshot, SHA-256
    manifests and automatic rollback. The same engine as C(strongroom sync).
  - V(push) takes a snapshot, checks the covered files, commits every change (tracked edits
    included) with this side's manifest, pushes and checks the remote. V(pull) takes a
    snapshot, fetches, merges under the conflict policies and checks every file against the
    other side's manifest or the snapshot. Any failure rolls back and the task fails,
    saying what happened and that it rolled back.
  - V(policies) only installs the merge drivers (C(.git/info/attributes) and
    C(.git/config)) for O(policies); push and pull install them too.
  - V(rollback) restores the last snapshot (HEAD, then files, then a hash check).
  - V(status) reports ahead/behind, dirty files, the last sync and the snapshot, offline.
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.attributes
requirements:
  - git on the host
options:
  repo:
    description: The work tree to sync.
    type: path
    required: true
  operation:
    description: What to do.
    type: str
    choices: [push, pull, policies, rollback, status]
    default: status
  role:
    description:
      - This machine's side, from the inventory. V(primary-wins) paths keep the primary's
        version on both machines.
      - Required when any policy is V(primary-wins); there is no default, because a
        forgotten role would let the wrong machine's version win.
    type: str
    choices: [primary, secondary]
  remote:
    description: The git remote to sync through.
    type: str
    default: origin
  branch:
    description: The branch to sync; default the checked-out one.
    type: str
  include:
    description: gitignore-style patterns of the files the manifest covers; default all.
    type: list
    elements: str
  exclude:
    description: gitignore-style patterns left out of the manifest.
    type: list
    elements: str
  policies:
    description:
      - Conflict policy per gitignore-style pattern, V(append), V(block) or
        V(primary-wins).
    type: dict
  engine:
    description:
      - The C(strongroom) executable the merge drivers call; default the one in the
        engine's virtualenv (O(engine_venv), or the one the engine was found in), else the
        one beside the module's Python.
    type: path
attributes:
  check_mode:
    support: full
    details:
      - push and pull ask the remote for its branch head (read-only) and report what would
        happen; nothing is fetched, committed, snapshotted or written.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Push the notes from the primary
  strongroom.backup.git_sync:
    repo: /home/alice/brain
    operation: push
    role: primary
    include: ["clients/*/tasks.json", "*.md"]
    policies:
      "log/completed.md": append
      "clients/*/tasks.json": block
    engine_venv: "{{ strongroom_venv }}"

- name: Install the merge drivers only
  strongroom.backup.git_sync:
    repo: /home/alice/brain
    operation: policies
    role: secondary
    policies: {"build/": primary-wins}
"""

RETURN = r"""
head:
  description: HEAD after the operation (in check mode, HEAD now).
  returned: push, pull, rollback
  type: str
message:
  description: What happened, in one line.
  returned: push, pull, rollback, check mode
  type: str
remote_head:
  description: The remote branch's head as the remote reported it.
  returned: check mode
  type: str
dirty:
  description: Modified, added or untracked files (those push would commit).
  returned: check mode, status
  type: list
  elements: str
incoming:
  description: Files the pulled commits changed.
  returned: pull that merged
  type: list
  elements: str
conflicts:
  description: Files a block policy stopped on; their versions are kept as FILE.theirs.
  returned: when a pull was blocked
  type: list
  elements: str
kept_side_by_side:
  description: The other side's versions a block policy kept beside the files (FILE.theirs).
  returned: when a pull was blocked
  type: list
  elements: str
rollback:
  description: What the automatic rollback did.
  returned: when a push or pull failed after its snapshot
  type: str
policy_changes:
  description: The attribute file and git config keys that were (or would be) written.
  returned: push, pull, policies
  type: list
  elements: str
status:
  description: ahead, behind, dirty, last sync, snapshot (operation=status).
  returned: status
  type: dict
changed_files:
  description: Files that differed from the snapshot and were (or would be) put back.
  returned: rollback
  type: list
  elements: str
kept:
  description: >-
    Files whose newer versions (changed after the snapshot) were copied to O(kept_dir)
    before the snapshot's versions went in place; nothing is lost.
  returned: rollback
  type: list
  elements: str
kept_dir:
  description: The folder holding those newer versions, or null.
  returned: rollback
  type: str
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def settings(p):
    from strongroom import sync

    return sync.Settings(repo=Path(p["repo"]), role=p["role"], remote=p["remote"],
                            branch=p["branch"], include=list(p["include"] or []),
                            exclude=list(p["exclude"] or []),
                            policies=dict(p["policies"] or {}))


def push_or_pull(module, s, engine):
    from strongroom import sync

    p = module.params
    changes = sync.install_policies(s, engine, dry_run=module.check_mode)
    if module.check_mode:
        out = sync.preview(s, p["operation"])
        module.exit_json(changed=out["would_change"] or bool(changes), message=out["message"],
                         head=out["head"], remote_head=out["remote_head"], dirty=out["dirty"],
                         policy_changes=changes)
    result = sync.push(s) if p["operation"] == "push" else sync.pull(s)
    out = {k: result[k] for k in ("head", "message", "incoming", "conflicts",
                                  "kept_side_by_side", "rollback") if k in result}
    out["policy_changes"] = changes
    if result["result"] != "ok":
        module.fail_json(msg=f"{p['operation']} of {p['repo']} failed: {result['message']}"
                             + (f"; {result['rollback']}" if result.get("rollback") else ""),
                         changed=bool(changes), **out)
    module.exit_json(changed=bool(result.get("changed") or changes), **out)


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            repo=dict(type="path", required=True),
            operation=dict(type="str", default="status",
                           choices=["push", "pull", "policies", "rollback", "status"]),
            role=dict(type="str", choices=["primary", "secondary"]),
            remote=dict(type="str", default="origin"),
            branch=dict(type="str"),
            include=dict(type="list", elements="str"),
            exclude=dict(type="list", elements="str"),
            policies=dict(type="dict"),
            engine=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    venv = require_engine(module, "to sync repositories")
    from strongroom import sync
    from strongroom.core.errors import StrongroomError

    p = module.params
    # the merge drivers run the engine's command: the one of the virtualenv it came from
    engine = p["engine"] or (str(Path(venv) / "bin" / "strongroom") if venv else None)
    try:
        s = settings(p)
        sync.check_repo(s)
        if p["operation"] == "status":
            st = sync.status(s)
            module.exit_json(changed=False, status=st, dirty=st["dirty"])
        if p["operation"] == "policies":
            changes = sync.install_policies(s, engine, dry_run=module.check_mode)
            module.exit_json(changed=bool(changes), policy_changes=changes)
        if p["operation"] == "rollback":
            info = sync.snapshot_info(s)
            if info is None:
                module.fail_json(msg=f"{p['repo']}: no snapshot to roll back to")
            sync.refuse_rollback_over_user_commits(s)
            if module.check_mode:
                out = sync.rollback(s, dry_run=True, keep_newer=False)
            else:
                with sync.sync_lock(s):
                    out = sync.rollback(s, keep_newer=False)
            module.exit_json(changed=bool(out["changed_files"] or out["head_moved"]),
                             head=out["head"], changed_files=out["changed_files"],
                             kept=out.get("set_aside", []), kept_dir=out.get("kept_dir"),
                             message=f"snapshot of {info['taken']}")
        push_or_pull(module, s, engine)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()

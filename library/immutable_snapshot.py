#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: immutable_snapshot
short_description: Take, verify and prune immutable (chattr +i) snapshots of a folder
description:
  - With O(state=present), takes a snapshot of O(source) into O(dest) - critical files with
    their paths, SQLite databases through the online backup API, a full archive and
    C(SHA256SUMS) - built under a temporary name, renamed when complete, then made
    immutable. With O(min_age_hours), nothing is taken while the newest snapshot is
    younger than that, so a repeated run is not a change.
  - With O(state=verified), checks every (or the O(ids) given) snapshot's checksums,
    archive and databases, and fails naming each problem. Each result is recorded in
    C(DEST/.strongroom/verified.json) (what C(strongroom snapshot list) shows, and what
    pruning uses to keep the newest snapshot that verified); that record is not reported
    as a change, and in check mode it is not written.
  - With O(state=pruned), deletes the snapshots outside O(keep_last) and O(keep_days),
    lifting the immutable flag only on those, and checks the kept ones are untouched.
  - The same engine as C(strongroom snapshot now|verify|prune).
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.attributes
requirements:
  - zstd (or gzip for O(format=gz)); chattr support on O(dest) for immutability
options:
  dest:
    description: The folder holding the snapshots.
    type: path
    required: true
  state:
    description: V(present) takes a snapshot, V(verified) checks, V(pruned) deletes old ones.
    type: str
    choices: [present, verified, pruned]
    default: present
  source:
    description: The folder to snapshot (O(state=present)).
    type: path
  critical:
    description: gitignore-style patterns of critical files, copied with their paths.
    type: list
    elements: str
    default: []
  db:
    description: SQLite databases (absolute, or relative to O(source)).
    type: list
    elements: path
    default: []
  exclude:
    description: Left out of the archive, besides node_modules, venv, .venv, __pycache__, .git.
    type: list
    elements: str
    default: []
  immutable:
    description:
      - V(require) fails when chattr +i is unavailable on O(dest); V(warn) takes the
        snapshot and reports it in C(warning); V(off) does not try.
    type: str
    choices: [require, warn, 'off']
    default: warn
  format:
    description: Archive compression.
    type: str
    choices: [zst, gz]
    default: zst
  min_age_hours:
    description: Take no snapshot while the newest is younger than this.
    type: float
    default: 0
  ids:
    description: Snapshots to verify (O(state=verified)); default all.
    type: list
    elements: str
  keep_last:
    description: Always keep the newest N (O(state=pruned)).
    type: int
    default: 7
  keep_days:
    description: Keep every snapshot younger than this many days (O(state=pruned)).
    type: float
    default: 14
attributes:
  check_mode:
    support: full
    details:
      - Reports whether a snapshot would be taken or which would be pruned; O(state=verified)
        checks as usual and records nothing.
  diff_mode:
    support: none
"""

EXAMPLES = r"""
- name: Daily snapshot of the project, at most one a day
  strongroom.backup.immutable_snapshot:
    source: /srv/cora
    dest: /var/backups/cora
    critical: ["*.md", "config/*.json"]
    db: [data/app.db]
    min_age_hours: 20
    engine_venv: "{{ strongroom_venv }}"

- name: Keep a week of snapshots
  strongroom.backup.immutable_snapshot:
    dest: /var/backups/cora
    state: pruned
    keep_last: 7
    keep_days: 7
"""

RETURN = r"""
id:
  description:
    - The snapshot taken (state=present); with O(min_age_hours), the newest snapshot when
      it is too young for a new one.
  returned: when a snapshot was taken, or none was because of O(min_age_hours)
  type: str
  sample: 20261121-031500-4db566d
immutable:
  description: yes, partial or no - the flags actually on the new snapshot.
  returned: when a snapshot was taken
  type: str
warning:
  description: Why the snapshot is not (fully) immutable.
  returned: when it is not
  type: str
report:
  description: The snapshot's REPORT.json.
  returned: when a snapshot was taken
  type: dict
results:
  description: One verdict per snapshot (state=verified).
  returned: when state is verified
  type: list
  elements: dict
deleted:
  description: Snapshots deleted (or that would be, in check mode).
  returned: when state is pruned
  type: list
  elements: str
kept:
  description: Snapshots kept.
  returned: when state is pruned
  type: list
  elements: str
"""

from datetime import UTC, datetime

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def present(module):
    from strongroom import snapshots

    p = module.params
    if not p["source"]:
        module.fail_json(msg="source is required with state=present")
    ids = snapshots.snapshot_ids(p["dest"])
    if ids and p["min_age_hours"] > 0:
        age = (datetime.now(UTC) - snapshots.parse_id(ids[-1])).total_seconds() / 3600
        if 0 <= age < p["min_age_hours"]:
            module.exit_json(changed=False, id=ids[-1], msg=(
                f"the newest snapshot {ids[-1]} is {age:.1f} h old"))
    if module.check_mode:
        module.exit_json(changed=True, msg="would take a snapshot")
    from strongroom.snapshots.take import take

    rep = take({"source": p["source"], "dest": p["dest"], "critical": p["critical"],
                "db": p["db"], "exclude": p["exclude"], "immutable": p["immutable"],
                "format": p["format"]})
    out = {"changed": True, "id": rep["id"], "immutable": rep["applied"], "report": rep}
    if rep.get("warning"):
        out["warning"] = rep["warning"]
        module.warn(rep["warning"])
    module.exit_json(**out)


def verified(module):
    from strongroom import snapshots

    p = module.params
    ids = p["ids"] or snapshots.snapshot_ids(p["dest"])
    if not ids:
        module.fail_json(msg=f"no snapshots in {p['dest']} to verify")
    # the verification record is a write: check mode checks as usual and records nothing
    results = [snapshots.verify(p["dest"], i, record=not module.check_mode) for i in ids]
    bad = [r for r in results if not r["passed"]]
    if bad:
        module.fail_json(msg="; ".join(f"{r['id']}: " + ", ".join(r["problems"]) for r in bad),
                         results=results)
    module.exit_json(changed=False, results=results)


def pruned(module):
    from strongroom import snapshots

    p = module.params
    out = snapshots.prune(p["dest"], p["keep_last"], p["keep_days"], dry_run=module.check_mode)
    if out["problems"]:
        module.fail_json(msg="pruning changed a kept snapshot: " + "; ".join(out["problems"]),
                         deleted=out["deleted"], kept=out["kept"])
    module.exit_json(changed=bool(out["deleted"]), deleted=out["deleted"], kept=out["kept"])


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            dest=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "verified", "pruned"]),
            source=dict(type="path"),
            critical=dict(type="list", elements="str", default=[]),
            db=dict(type="list", elements="path", default=[]),
            exclude=dict(type="list", elements="str", default=[]),
            immutable=dict(type="str", default="warn", choices=["require", "warn", "off"]),
            format=dict(type="str", default="zst", choices=["zst", "gz"]),
            min_age_hours=dict(type="float", default=0),
            ids=dict(type="list", elements="str"),
            keep_last=dict(type="int", default=7),
            keep_days=dict(type="float", default=14),
        ),
        supports_check_mode=True,
    )
    require_engine(module, "to take snapshots")
    from strongroom.core.errors import StrongroomError

    try:
        {"present": present, "verified": verified, "pruned": pruned}[module.params["state"]](
            module)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()

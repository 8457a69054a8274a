#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: checksum_manifest
short_description: Keep or check a SHA-256 manifest of a directory tree
description:
  - With O(state=present), records every covered file under O(root) (its SHA-256, size and
    modification time) in the JSON manifest O(path), written atomically with the previous
    one kept as C(PATH.prev). C(changed) only when the recorded files or hashes differ.
  - With O(state=verified), checks O(root) against O(path) and fails naming every file
    that is missing or whose hash differs. New files are reported, not failed.
  - The same engine as C(strongroom manifest create|update|verify).
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.attributes
options:
  root:
    description: The directory the manifest describes.
    type: path
    required: true
  path:
    description: The manifest file.
    type: path
    required: true
  state:
    description: V(present) records the tree; V(verified) checks it.
    type: str
    choices: [present, verified]
    default: present
  include:
    description:
      - gitignore-style patterns of files to cover; default every file.
      - For O(state=present) with an existing manifest, omitted means the manifest's own.
    type: list
    elements: str
  exclude:
    description: gitignore-style patterns of files to leave out (C(.git/) always is).
    type: list
    elements: str
  mode:
    description:
      - V(deep) re-hashes every file; V(fast) trusts files whose size, mtime and inode
        match the manifest (only meaningful on the machine that wrote it).
    type: str
    choices: [deep, fast]
    default: deep
  phase:
    description: Recorded in the manifest's C(metadata.phase).
    type: str
    default: ansible
attributes:
  check_mode:
    support: full
    details: Hashes and compares, writes nothing.
  diff_mode:
    support: full
    details:
      - With O(state=present), the files added, removed and changed since the recorded
        manifest, as C(sha256sum) lines (hash, two spaces, path) - a changed file shows its
        old hash before and its new one after - and the include and exclude patterns when
        they changed.
"""

EXAMPLES = r"""
- name: Record the critical files of the notes tree
  strongroom.backup.checksum_manifest:
    root: /home/alice/brain
    path: /home/alice/brain/.sync-checksums.json
    include: ["clients/*/tasks.json", "data/state/*.json"]

- name: Check it, re-hashing everything
  strongroom.backup.checksum_manifest:
    root: /home/alice/brain
    path: /home/alice/brain/.sync-checksums.json
    state: verified
    engine_venv: /home/alice/.local/share/strongroom/venv
"""

RETURN = r"""
files:
  description: Files in the manifest.
  returned: always
  type: int
  sample: 120
added:
  description: Paths added to the manifest (state=present).
  returned: when state is present
  type: list
  elements: str
removed:
  description: Paths no longer in the tree (state=present).
  returned: when state is present
  type: list
  elements: str
changed_paths:
  description: Paths whose hash changed (state=present).
  returned: when state is present
  type: list
  elements: str
diff:
  description:
    - What changed since the recorded manifest, as C(sha256sum) lines - removed and changed
      files with their recorded hash in C(before), added and changed files with their hash
      now in C(after) - and the patterns when they changed.
  returned: when state is present and diff mode is on
  type: dict
  sample:
    before: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  notes/a.md\n"
    after: "0b7d1f4ee2e5c3b6d2f1e9e84c6b2f1cd0a4d4a5f2f7d0c3a4c1c9e1b8f0a2d3  notes/a.md\n"
    before_header: /home/alice/brain/.sync-checksums.json (recorded)
    after_header: /home/alice/brain/.sync-checksums.json (now)
verdict:
  description: The check (state=verified) - passed, mismatched, missing, new.
  returned: when state is verified
  type: dict
  sample: {passed: false, mismatched: [a.json], missing: [], new: [b.json], hashed: 3}
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def hash_diff(old, new, old_selection, selection):
    """Ansible's before/after for the manifest: sha256sum lines of the removed and changed
    files as recorded, of the added and changed ones as they are now (unchanged files are
    left out: a tree has thousands), preceded by the patterns when they changed."""
    from strongroom import manifest

    changes = manifest.diff(old, new)
    before = manifest.sha256sum_lines(
        {"checksums": {r: old[r] for r in changes["removed"] + changes["changed"]}})
    after = manifest.sha256sum_lines(
        {"checksums": {r: new[r] for r in changes["added"] + changes["changed"]}})
    if old_selection is not None and (old_selection.include, old_selection.exclude) != (
            selection.include, selection.exclude):
        before = patterns_text(old_selection) + before
        after = patterns_text(selection) + after
    return before, after


def patterns_text(selection):
    return (f"# include: {' '.join(selection.include) or '(every file)'}\n"
            f"# exclude: {' '.join(selection.exclude) or '(none)'}\n")


def present(module):
    from strongroom import manifest

    p = module.params
    old = None
    try:
        old = manifest.load(p["path"])
    except manifest.ManifestError:
        if Path(p["path"]).exists():
            raise  # a damaged manifest is not silently replaced
    sel = manifest.selection_of(old) if old else manifest.Selection()
    selection = manifest.Selection(p["include"] if p["include"] is not None else sel.include,
                                   p["exclude"] if p["exclude"] is not None else sel.exclude)
    reuse = old["checksums"] if (old and p["mode"] == "fast") else None
    data = manifest.build(p["root"], selection, phase=p["phase"], operation="ansible",
                          reuse=reuse, skip=manifest.own_files(p["path"]))
    changes = manifest.diff(old["checksums"] if old else {}, data["checksums"])
    same_patterns = old is not None and (
        manifest.selection_of(old).include == selection.include
        and manifest.selection_of(old).exclude == selection.exclude)
    changed = old is None or any(changes.values()) or not same_patterns
    out = {"changed": changed, "files": len(data["checksums"]), "added": changes["added"],
           "removed": changes["removed"], "changed_paths": changes["changed"]}
    if module._diff:
        before, after = hash_diff(old["checksums"] if old else {}, data["checksums"],
                                  manifest.selection_of(old) if old else None, selection)
        out["diff"] = {"before": before, "after": after,
                       "before_header": f"{p['path']} (recorded)",
                       "after_header": f"{p['path']} (now)"}
    if changed and not module.check_mode:
        manifest.write(p["path"], data)
    module.exit_json(**out)


def verified(module):
    from strongroom import manifest

    p = module.params
    data = manifest.load(p["path"])
    v = manifest.verify(p["root"], data, fast=p["mode"] == "fast",
                        skip=manifest.own_files(p["path"]))
    out = {"changed": False, "files": len(data["checksums"]), "verdict": v.as_dict()}
    if not v.passed:
        parts = []
        if v.mismatched:
            parts.append("hash differs: " + ", ".join(v.mismatched))
        if v.missing:
            parts.append("missing: " + ", ".join(v.missing))
        if v.unreadable:
            parts.append("unreadable: " + ", ".join(sorted(v.unreadable)))
        module.fail_json(msg=f"{p['root']} does not match {p['path']}: " + "; ".join(parts),
                         **out)
    module.exit_json(**out)


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            root=dict(type="path", required=True),
            path=dict(type="path", required=True),
            state=dict(type="str", default="present", choices=["present", "verified"]),
            include=dict(type="list", elements="str"),
            exclude=dict(type="list", elements="str"),
            mode=dict(type="str", default="deep", choices=["deep", "fast"]),
            phase=dict(type="str", default="ansible"),
        ),
        supports_check_mode=True,
    )
    require_engine(module, "to hash trees")
    from strongroom.core.errors import StrongroomError

    try:
        (present if module.params["state"] == "present" else verified)(module)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()

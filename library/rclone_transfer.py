#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: rclone_transfer
short_description: Copy files to an rclone remote and prove the copy by hash
description:
  - Copies O(src) (a file or a folder) into O(dest) on an rclone remote, then checks every
    file one way by a hash both sides support; when they share none, the remote copy is
    read back (rclone check C(--download)). A check that could not compare hashes is a
    failure, never a pass.
  - Only after that check, and only when O(delete_local_after_verify=true), are the local
    files deleted; a file that changed while it was being uploaded is kept.
  - With O(immutable=true), a remote file with other content is an error and is never
    overwritten, except the truncated leftover of this engine's own killed upload. A remote
    file with the same content (by hash) under another modification time is already there;
    it is left untouched and is not a conflict.
  - C(changed) is true only when bytes moved (or local files were deleted). In check mode
    rclone runs with C(--dry-run) and nothing is copied, checked or deleted.
  - The same engine as C(strongroom upload).
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.rclone
  - strongroom.backup.engine.transfer
  - strongroom.backup.engine.attributes
options:
  src:
    description: Local file or folder to upload.
    type: path
    required: true
  dest:
    description: Destination folder, C(REMOTE:PATH) (a remote from the rclone config).
    type: str
    required: true
  immutable:
    description: Refuse to overwrite a remote file that has other content (the same content
      under another modification time is not a conflict).
    type: bool
    default: false
  delete_local_after_verify:
    description: Delete the local files once every remote copy matched.
    type: bool
    default: false
  journal_dir:
    description:
      - Where the in-flight journal lives, which lets a rerun replace the partial files
        of a killed upload. Without it, such a file is reported as a conflict under
        O(immutable).
    type: path
attributes:
  check_mode:
    support: full
    details:
      - rclone runs with C(--dry-run); nothing is copied, checked or deleted, and the
        journal is not written. RV(transferred) lists what would be copied.
  diff_mode:
    support: none
seealso:
  - name: rclone check
    description: The one-way check this module runs after copying.
    link: https://rclone.org/commands/rclone_check/
"""

EXAMPLES = r"""
- name: Ship last night's archive off-site, then free the space
  strongroom.backup.rclone_transfer:
    src: /var/backups/strongroom/weekly_20261109_20261115.tar.zst
    dest: offsite:strongroom/rollups
    immutable: true
    delete_local_after_verify: true
    rclone_config: /etc/strongroom/rclone.conf
    bwlimit: 10M
    engine_venv: /opt/strongroom/venv
"""

RETURN = r"""
src:
  description: The local file or folder given in O(src).
  type: str
  returned: always
dest:
  description: The destination given in O(dest).
  type: str
  returned: always
files:
  description: Files found under O(src).
  type: int
  returned: always
bytes:
  description: Bytes of those files.
  type: int
  returned: always
skipped:
  description: Entries under O(src) that are not regular files (links, sockets) and were left out.
  type: list
  elements: str
  returned: always
dry_run:
  description: Whether this was a check-mode run (nothing copied, checked or deleted).
  type: bool
  returned: always
transferred:
  description: Files rclone copied (or would copy, in check mode).
  type: list
  elements: str
  returned: always
bytes_moved:
  description: Bytes of the files copied.
  type: int
  returned: always
verified_by:
  description: C(hash), or C(download) when the two sides share no hash type; null in check
    mode and when there was nothing to upload.
  type: str
  returned: always
deleted:
  description: Local files deleted after the check.
  type: list
  elements: str
  returned: always
kept:
  description: Local files that changed during the upload and were not deleted.
  type: list
  elements: str
  returned: always
seconds:
  description: How long the copy and its check took.
  type: float
  returned: when files were copied and checked
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            src=dict(type="path", required=True),
            dest=dict(type="str", required=True),
            immutable=dict(type="bool", default=False),
            delete_local_after_verify=dict(type="bool", default=False),
            bwlimit=dict(type="str"),
            rclone_config=dict(type="path"),
            retries=dict(type="int", default=3),
            low_level_retries=dict(type="int", default=3),
            journal_dir=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    require_engine(module, "to upload")
    from strongroom.core.errors import StrongroomError
    from strongroom.core.remote import Rclone
    from strongroom.upload import Upload

    p = module.params
    rclone = Rclone(p["rclone_config"], bwlimit=p["bwlimit"], retries=p["retries"],
                    low_level_retries=p["low_level_retries"])
    try:
        out = Upload(rclone, journal_dir=p["journal_dir"]).run(
            p["src"], p["dest"], immutable=p["immutable"],
            delete_local=p["delete_local_after_verify"], dry_run=module.check_mode)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc))
    if out["kept"]:
        module.warn(f"{len(out['kept'])} file(s) changed during the upload and were kept")
    out["changed"] = out["changed"] or bool(out["deleted"])
    out["msg"] = out.pop("message")
    module.exit_json(**out)


if __name__ == "__main__":
    main()

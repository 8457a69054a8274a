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
requirements:
  - rclone
  - the strongroom engine importable by the module's Python (installed by the strongroom
    role; point C(ansible_python_interpreter) at its virtualenv)
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
  bwlimit:
    description: rclone bandwidth limit, for example C(10M).
    type: str
  rclone_config:
    description: rclone.conf to use (default rclone's own).
    type: path
  retries:
    description: Attempts of the whole copy.
    type: int
    default: 3
  low_level_retries:
    description: Retries of each request, with backoff.
    type: int
    default: 3
  journal_dir:
    description:
      - Where the in-flight journal lives, which lets a rerun replace the partial files
        of a killed upload. Without it, such a file is reported as a conflict under
        O(immutable).
    type: path
notes:
  - Credentials stay in the rclone config (0600); they are never passed as arguments.
seealso:
  - name: rclone check
    description: The one-way check this module runs after copying.
    link: https://rclone.org/commands/rclone_check/
"""

EXAMPLES = r"""
- name: Ship last night's archive off-site, then free the space
  rclone_transfer:
    src: /var/backups/strongroom/weekly_20261109_20261115.tar.zst
    dest: offsite:strongroom/rollups
    immutable: true
    delete_local_after_verify: true
    rclone_config: /etc/strongroom/rclone.conf
  vars:
    ansible_python_interpreter: /opt/strongroom/venv/bin/python
"""

RETURN = r"""
files:
  description: Files found under O(src).
  type: int
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
  description: C(hash), or C(download) when the two sides share no hash type.
  type: str
  returned: when not in check mode
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
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from strongroom.core.errors import StrongroomError
    from strongroom.core.remote import Rclone
    from strongroom.upload import Upload

    HAS_STRONGROOM = True
    IMPORT_ERROR = None
except ImportError:
    HAS_STRONGROOM = False
    IMPORT_ERROR = traceback.format_exc()


def main():
    module = AnsibleModule(
        argument_spec=dict(
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
    if not HAS_STRONGROOM:
        module.fail_json(msg=missing_required_lib(
            "strongroom", reason="to upload",
            url="run playbooks/site.yml to install the engine, and set "
                "ansible_python_interpreter to its virtualenv's python"),
            exception=IMPORT_ERROR)
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

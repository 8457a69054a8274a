# Copyright: Strongroom contributors
# MIT License
"""Options and notes the Strongroom modules share."""


class ModuleDocFragment:
    # every module: where the engine is found on the host
    DOCUMENTATION = r"""
options:
  engine_venv:
    description:
      - The virtualenv holding the Strongroom engine on the host (the strongroom role's
        C(strongroom_venv)). Its site-packages are added to the module's Python, so the
        module runs on the host's usual C(ansible_python_interpreter); that Python must be
        of the version the virtualenv was made with.
      - When unset, C(STRONGROOM_VENV) from the module's environment; else the module's own
        Python when it can import the engine; else the role's default for the user the
        module runs as (C(/opt/strongroom/venv) as root, C(~/.local/share/strongroom/venv)
        otherwise).
      - When the engine is found nowhere, the task fails saying where it looked and how to
        install it.
    type: path
requirements:
  - the Strongroom engine on the host, installed by the strongroom role (a virtualenv at
    O(engine_venv))
"""

    # modules that reach an rclone remote
    RCLONE = r"""
options:
  rclone_config:
    description:
      - The rclone.conf holding the remotes' settings and credentials (the strongroom role
        renders C(<config dir>/rclone.conf), mode 0600). When unset, rclone's own default.
    type: path
requirements:
  - rclone on the host
notes:
  - Credentials stay in the rclone config; they are never module arguments.
"""

    # modules that copy through rclone with limits
    TRANSFER = r"""
options:
  bwlimit:
    description: rclone bandwidth limit, for example C(10M) (rclone C(--bwlimit)).
    type: str
  retries:
    description: Attempts of each whole rclone command (rclone C(--retries)).
    type: int
    default: 3
  low_level_retries:
    description: Retries of each request, with backoff (rclone C(--low-level-retries)).
    type: int
    default: 3
"""

    # every module, with ansible.builtin.action_common_attributes
    ATTRIBUTES = r"""
attributes:
  platform:
    support: full
    platforms: posix
notes:
  - In check mode a module that supports it reads and compares, and writes nothing on the
    host - no file, record or lock is left behind - and makes no change to a remote; see
    each module's C(check_mode) attribute for what it reports then.
  - Every value the module returns is listed under RETURN; C(changed) is true only when
    something was (or, in check mode, would be) written.
"""

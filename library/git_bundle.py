#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: git_bundle
short_description: Keep git repositories as verified chains of git bundles
description:
  - Finds every git repository under O(root) and keeps each as a chain of git bundles
    in O(store) - a full bundle of all refs, then incrementals over all refs - with a
    SHA-256 for every file and a ref manifest per bundle kept in the store, never in the
    repository.
  - Optionally copies new files to an rclone O(remote) and proves them by SHA-256.
  - With O(state=verified), checks every hash, restores each chain into scratch space and
    runs C(git fsck --full --strict).
  - With O(state=restored), rebuilds one repository into O(target) with exactly the refs
    it had at the last sync, and its critical ignored files.
  - A thin wrapper over the C(strongroom) engine; the same operations as
    C(strongroom bundle sync|verify|restore).
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.rclone
  - strongroom.backup.engine.attributes
requirements:
  - git and zstd on the host
options:
  state:
    description:
      - V(synced) bundles what changed; V(verified) checks the store; V(restored) rebuilds
        one repository.
    type: str
    choices: [synced, verified, restored]
    default: synced
  root:
    description: Directory searched for git repositories. Required when O(state=synced).
    type: path
  store:
    description: The local bundle store.
    type: path
    required: true
  remote:
    description:
      - rclone C(REMOTE:PATH) for the off-site copy. New files are copied with
        C(--immutable) and checked by SHA-256; the remote is never mirrored with deletes.
      - For O(state=restored), files missing from the store are fetched from here.
    type: str
  names:
    description:
      - Only these repositories (names are paths relative to O(root)).
      - With O(state=restored), exactly one name is required.
    type: list
    elements: str
  target:
    description: Directory to restore into. Required when O(state=restored).
    type: path
  force:
    description: Restore over a non-empty O(target); its contents are moved aside.
    type: bool
    default: false
  full_every:
    description: Incrementals before a fresh full bundle starts a new chain.
    type: int
    default: 10
  full_after_days:
    description: Days before a fresh full bundle starts a new chain.
    type: float
    default: 30
  keep_retired:
    description: Retired chains kept in the store after a consolidation.
    type: int
    default: 1
  critical_patterns:
    description:
      - gitignore-style patterns choosing ignored files to keep (C(.env), keys); each
        repository may add its own in C(.strongroom-critical). Stored unencrypted.
      - When omitted, the engine's defaults are used.
    type: list
    elements: str
  lock_wait:
    description: Seconds to wait for another run's lock before failing.
    type: float
    default: 0
attributes:
  check_mode:
    support: full
    details: Computes which repositories would get a full, incremental or refs-only entry;
      writes nothing.
  diff_mode:
    support: full
    details: Shows ref changes per repository.
notes:
  - Exit status of the engine maps to the task; a repository that failed fails the task,
    the others are still bundled and reported in RV(repositories).
"""

EXAMPLES = r"""
- name: Bundle every repository under ~/projects and copy it off-site
  strongroom.backup.git_bundle:
    root: /home/alice/projects
    store: /home/alice/.local/state/strongroom/bundles
    remote: offsite:strongroom/alice
    rclone_config: /home/alice/.config/strongroom/rclone.conf
    engine_venv: /home/alice/.local/share/strongroom/venv

- name: Prove the store restores
  strongroom.backup.git_bundle:
    state: verified
    store: /var/lib/strongroom/bundles

- name: Restore one repository from the off-site copy
  strongroom.backup.git_bundle:
    state: restored
    store: /var/lib/strongroom/bundles
    remote: offsite:strongroom/server
    names: [work/api]
    target: /srv/restore/api
"""

RETURN = r"""
repositories:
  description: One entry per repository (synced, verified) with its action or result.
  returned: when state is synced or verified
  type: list
  elements: dict
  sample:
    - name: work/api
      action: incremental
      status: ok
      bytes_written: 4096
      chain_length: 3
      remote: verified
exit_code:
  description: The engine's exit code (0 ok, 1 warnings, 2 error, 3 incomplete, 11 locked).
  returned: always
  type: int
  sample: 0
restored:
  description: What was restored.
  returned: when state is restored
  type: dict
  sample: {name: work/api, target: /srv/restore/api, refs: 12, critical_files: [.env]}
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def engine_options(params, dry_run):
    from strongroom import bundles

    kwargs = {
        "full_every": params["full_every"],
        "full_after_days": params["full_after_days"],
        "keep_retired": params["keep_retired"],
        "remote": params["remote"],
        "rclone_config": params["rclone_config"],
        "dry_run": dry_run,
    }
    if params["critical_patterns"] is not None:
        kwargs["critical_patterns"] = params["critical_patterns"]
    return bundles.Options(**kwargs)


def refs_text(refs):
    return "".join(f"{sha} {name}\n" for name, sha in sorted(refs.items()))


def ref_diff(results):
    out = []
    for r in results:
        if r.refs_before != r.refs_after and r.action not in ("failed", "empty"):
            out.append({
                "before_header": f"{r.name} (last bundled)",
                "after_header": f"{r.name} (now)",
                "before": refs_text(r.refs_before),
                "after": refs_text(r.refs_after),
            })
    return out


def do_synced(module):
    from strongroom import bundles

    p = module.params
    opts = engine_options(p, module.check_mode)
    results, code = bundles.sync(p["root"], p["store"], opts, names=p["names"],
                                 lock_wait=p["lock_wait"])
    rows = [r.as_dict() for r in results]
    if module.check_mode:
        changed = any(r.action not in ("unchanged", "empty") for r in results)
    else:
        changed = any(r.changed for r in results)
    out = {"changed": changed, "repositories": rows, "exit_code": code}
    if module._diff:
        out["diff"] = ref_diff(results)
    failed = [f"{r.name}: {r.message}" for r in results if r.status == "error"]
    if failed:
        module.fail_json(msg=f"{len(failed)} of {len(results)} repositories failed: "
                         + "; ".join(failed), **out)
    if not results:
        module.warn(f"no git repositories found under {p['root']}")
    for r in results:
        for note in r.notes:
            if "UNENCRYPTED" not in note:
                module.warn(f"{r.name}: {note}")
    module.exit_json(**out)


def do_verified(module):
    from strongroom import bundles

    p = module.params
    results, code = bundles.verify(p["store"], engine_options(p, False), p["names"],
                                   lock_wait=p["lock_wait"])
    out = {"changed": False, "repositories": [r.as_dict() for r in results],
           "exit_code": code}
    bad = [f"{r.name}: {r.message}" for r in results if r.status != "ok"]
    if bad:
        module.fail_json(msg="verification failed: " + "; ".join(bad), **out)
    if not results:
        module.fail_json(msg=f"no chains in {p['store']}: nothing was verified", **out)
    module.exit_json(**out)


def target_matches(store, name, target):
    """True when target already holds the repository at its last synced refs."""
    from strongroom.bundles import chain
    from strongroom.core.errors import StrongroomError
    from strongroom.core.gitcmd import read_refs

    try:
        manifest = chain.load(Path(store) / name, check_files=False)
        wanted = chain.read_refs_file(Path(store) / name / manifest["bundles"][-1]["refs_file"])
        return read_refs(target)[0] == wanted["refs"]
    except (chain.ChainInvalid, StrongroomError, OSError):
        return False


def do_restored(module):
    from strongroom import bundles

    p = module.params
    if not p["names"] or len(p["names"]) != 1:
        module.fail_json(msg="state=restored needs exactly one repository in names, "
                         f"got {p['names']!r}", exit_code=2)
    name, target = p["names"][0], Path(p["target"])
    if target.is_dir() and target_matches(p["store"], name, target):
        module.exit_json(changed=False, exit_code=0,
                         restored={"name": name, "target": str(target)})
    busy = target.exists() and (not target.is_dir() or any(target.iterdir()))
    if busy and not p["force"]:
        module.fail_json(msg=f"target {target} exists and is not empty; choose an empty or "
                         "new directory, or set force=true (its contents are moved aside)",
                         exit_code=2)
    if module.check_mode:
        module.exit_json(changed=True, exit_code=0, restored={"name": name,
                                                              "target": str(target)})
    Path(p["store"]).mkdir(parents=True, exist_ok=True)
    with bundles.Lock(Path(p["store"]) / bundles.LOCK_NAME,
                      f"bundle store {p['store']}").acquire(p["lock_wait"]):
        out = bundles.restore(p["store"], name, target, engine_options(p, False),
                              force=p["force"])
    module.exit_json(changed=True, exit_code=0, restored=out)


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            state=dict(type="str", default="synced", choices=["synced", "verified", "restored"]),
            root=dict(type="path"),
            store=dict(type="path", required=True),
            remote=dict(type="str"),
            rclone_config=dict(type="path"),
            names=dict(type="list", elements="str"),
            target=dict(type="path"),
            force=dict(type="bool", default=False),
            full_every=dict(type="int", default=10),
            full_after_days=dict(type="float", default=30),
            keep_retired=dict(type="int", default=1),
            critical_patterns=dict(type="list", elements="str"),
            lock_wait=dict(type="float", default=0),
        ),
        required_if=[
            ("state", "synced", ["root"]),
            ("state", "restored", ["names", "target"]),
        ],
        supports_check_mode=True,
    )
    require_engine(module, "to bundle repositories")
    from strongroom.core.errors import StrongroomError

    if module.params["full_every"] < 1 or module.params["keep_retired"] < 0:
        module.fail_json(msg="full_every must be >= 1 and keep_retired >= 0")
    handlers = {"synced": do_synced, "verified": do_verified, "restored": do_restored}
    try:
        handlers[module.params["state"]](module)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc), exit_code=exc.exit_code)


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright: Strongroom contributors
# MIT License

DOCUMENTATION = r"""
---
module: notify
short_description: Send a message to a host's Strongroom notification targets
description:
  - Sends O(title) and O(body) through Apprise to the targets in the host's
    C(<config-dir>/notify.yml) (rendered by the strongroom role), filtered by each
    target's minimum severity and, when O(event) is given, by the events it wants.
  - Sending changes nothing on the host, so the task never reports C(changed).
  - In check mode nothing is sent; RV(would_send) names the targets that would get it.
  - Target URLs hold tokens and passwords; targets are always reported by name.
  - Use it by its full name, C(strongroom.backup.notify), since C(notify) alone is a task
    keyword.
version_added: "0.1.0"
author: Strongroom contributors
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - strongroom.backup.engine
  - strongroom.backup.engine.attributes
options:
  title:
    description: The message's title (the e-mail subject, the ntfy title).
    type: str
    required: true
  body:
    description: The message's text.
    type: str
    default: ""
  severity:
    description:
      - How serious the message is. A target gets it only when this is at or above its
        C(min_severity). ntfy's priority follows it.
    type: str
    choices: [info, success, warning, error]
    default: info
  event:
    description:
      - Send only to the targets whose C(events) include this one.
      - When omitted, every target whose C(min_severity) allows O(severity) gets it.
    type: str
    choices: [job_failed, job_recovered, job_succeeded, rollback_done, backup_stale,
              drill_passed, drill_failed]
  targets:
    description: Only these targets, by their C(name) in notify.yml.
    type: list
    elements: str
  config_dir:
    description:
      - The directory holding notify.yml. Defaults to the engine's default (
        C(/etc/strongroom) as root, C(~/.config/strongroom) otherwise).
    type: path
  fail_on_error:
    description: Fail the task when a target could not be reached.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details: Sends nothing; reports which targets would get the message.
  diff_mode:
    support: none
notes:
  - A host without notify.yml, or whose targets all filter the message out, sends nothing
    and warns.
  - A broken entry in notify.yml (a URL Apprise cannot parse, a bad value, a misspelt
    C(name), C(min_severity) or C(events)) is a failed target, named with what is wrong
    with it; the other targets still get the message.
"""

EXAMPLES = r"""
- name: Tell the owner the migration is done
  strongroom.backup.notify:
    title: "{{ inventory_hostname }}: storage migrated"
    body: Bundles now live on the new disk.
    severity: success

- name: Raise an alarm on the phone only
  strongroom.backup.notify:
    title: Restore drill could not start
    severity: error
    event: drill_failed
    targets: [phone]
"""

RETURN = r"""
sent:
  description: One entry per target the message went to, with whether it arrived.
  returned: when not in check mode
  type: list
  elements: dict
  sample: [{target: phone, event: message, severity: info, delivered: true}]
would_send:
  description: The targets that would get the message.
  returned: always
  type: list
  elements: str
  sample: [phone, mail]
failed_targets:
  description: Targets that could not be reached, or whose entry in notify.yml is broken.
  returned: always
  type: list
  elements: str
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.strongroom.backup.plugins.module_utils.strongroom_engine import (
    engine_argument_spec,
    require_engine,
)


def main():
    module = AnsibleModule(
        argument_spec=engine_argument_spec(
            title=dict(type="str", required=True),
            body=dict(type="str", default=""),
            severity=dict(type="str", default="info",
                          choices=["info", "success", "warning", "error"]),
            event=dict(type="str", choices=["job_failed", "job_recovered", "job_succeeded",
                                            "rollback_done", "backup_stale", "drill_passed",
                                            "drill_failed"]),
            targets=dict(type="list", elements="str"),
            config_dir=dict(type="path"),
            fail_on_error=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    require_engine(module, "to send notifications")
    from strongroom import notify
    from strongroom.core import paths
    from strongroom.core.errors import StrongroomError

    p = module.params
    config_dir = p["config_dir"] or str(paths.config_dir())
    try:
        targets, notes = notify.load(config_dir)
    except StrongroomError as exc:
        module.fail_json(msg=str(exc), failed_targets=[], would_send=[])
    for note in notes + notify.problems(config_dir, targets):
        module.warn(note)
    if p["targets"]:
        known = {t.name for t in targets}
        unknown = [n for n in p["targets"] if n not in known]
        if unknown:
            module.fail_json(msg=f"no target named {', '.join(unknown)} in "
                                 f"{config_dir}/notify.yml (known: "
                                 f"{', '.join(sorted(known)) or 'none'})",
                             would_send=[], failed_targets=[])
        targets = [t for t in targets if t.name in p["targets"]]
    # a broken entry costs only itself: it is a failed target (wants() takes every message
    # for it), the others still get theirs
    asked = [t for t in targets if t.wants(p["event"], p["severity"])]
    broken = [t for t in asked if t.problem]
    chosen = [t for t in asked if not t.problem]
    would_send = [t.name for t in chosen]
    if not chosen and not broken:
        module.warn(f"no target in {config_dir}/notify.yml takes this message "
                    f"(severity {p['severity']}, event {p['event'] or 'any'}); nothing sent")
    if module.check_mode:
        sent = [{"target": t.name, "delivered": False, "error": t.problem} for t in broken]
    else:
        sent = notify.send(asked, p["event"], p["severity"], p["title"], p["body"])
    failed = [r["target"] for r in sent if not r["delivered"]]
    if failed and p["fail_on_error"]:
        why = [r["target"] + (f" ({r['error']})" if r.get("error") else "")
               for r in sent if not r["delivered"]]
        module.fail_json(msg=f"notification failed for: {', '.join(why)}",
                         **({} if module.check_mode else {"sent": sent}),
                         would_send=would_send, failed_targets=failed)
    if module.check_mode or (not chosen and not broken):
        module.exit_json(changed=False, would_send=would_send, failed_targets=failed)
    module.exit_json(changed=False, sent=sent, would_send=would_send, failed_targets=failed)


if __name__ == "__main__":
    main()

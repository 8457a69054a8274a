"""What every Strongroom host must look like after playbooks/site.yml, checked on the host.

One test per check, run for every host of the inventory (testinfra's `host` fixture); a
check lists every problem it finds, one line each, each naming the host.
"""

import plistlib
import shlex
from datetime import UTC, datetime

import pytest
from conftest import Unresolved, one_line


def report(target, problems):
    if problems:
        pytest.fail("\n".join(f"host {target.name}: {p}" for p in problems), pytrace=False)


def human(seconds):
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def unscheduled(target, job):
    """Whether a scheduler entry for `job` runs nothing the host has: no job file, or one
    without a schedule. (A job file that does not parse is the job file check's.)"""
    if job not in target.job_files():
        return True
    found = target.job(job)
    return found is not None and not found.get("schedule")


def scheduled_jobs(target):
    """{job: schedule} of the job files on the host that name a schedule (the rendered
    spec, jitter included). A file that does not parse is the job file check's."""
    out = {}
    for name in target.job_files():
        job = target.job(name)
        if job and job.get("schedule"):
            out[name] = str(job["schedule"])
    return out


def rendering(target, job, spec, backend, problems):
    explained = target.explain(spec)
    if isinstance(explained, str):
        problems.append(f"job {job}'s schedule {spec!r} cannot be rendered: {explained}")
        return None
    if explained.get(backend) is None:
        why = explained.get(f"{backend}_refused") or "no rendering"
        problems.append(f"job {job}'s schedule {spec!r} cannot run under {backend}: {why}")
        return None
    return explained


# --- 1. the engine ------------------------------------------------------------------------


@pytest.mark.check("engine")
def test_engine_is_installed_and_runs(target):
    problems = []
    if not target.host.file(target.engine).exists:
        problems.append(f"the engine is not installed: {target.engine} does not exist "
                        "(run playbooks/site.yml)")
    else:
        res = target.run([target.engine, "--version"])
        if res.rc != 0:
            problems.append(f"{target.engine} --version failed (exit {res.rc}): "
                            f"{one_line(res.stderr or res.stdout) or 'no output'}")
        elif not res.stdout.startswith("strongroom "):
            problems.append(f"{target.engine} --version printed {one_line(res.stdout)!r}, "
                            "not a Strongroom version")
    report(target, problems)


# --- 2. job files ---------------------------------------------------------------------


@pytest.mark.check("job-files")
def test_every_job_file_is_valid(target):
    problems = []
    jobs_dir = f"{target.config_dir}/jobs"
    if not target.host.file(jobs_dir).is_directory:
        problems.append(f"{jobs_dir} does not exist (run playbooks/site.yml)")
    for path in target.job_files().values():
        res = target.run([target.engine, "config", "check", path])
        if res.rc != 0:
            why = one_line(res.stderr or res.stdout).removeprefix(f"{path}: ")
            problems.append(f"job file {path} is invalid: {why or f'exit {res.rc}'}")
    try:
        listed = target.vars.get("strongroom_jobs_list", deep=False)
        if not isinstance(listed, list):
            raise Unresolved(f"strongroom_jobs_list is {type(listed).__name__}, not a list")
        names = [target.vars.render(j.get("name")) for j in listed if isinstance(j, dict)]
    except Unresolved as exc:
        problems.append(f"cannot work out the inventory's jobs: {exc}")
        names = []
    for name in names:
        if name not in target.job_files():
            problems.append(f"job {name} is in the inventory but has no job file "
                            f"({jobs_dir}/{name}.yml)")
    report(target, problems)


# --- 3. schedules -----------------------------------------------------------------------


def crontab_entries(text):
    """{entry name: the line after it} for the entries Ansible's cron module manages."""
    lines = text.splitlines()
    return {line.removeprefix("#Ansible: "): (lines[i + 1] if i + 1 < len(lines) else "")
            for i, line in enumerate(lines) if line.startswith("#Ansible: ")}


def runs_job(argv, target, job, if_due):
    want = ["run", job] + (["--if-due"] if if_due else [])
    at = [i for i in range(len(argv)) if argv[i:i + len(want)] == want]
    config = [argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "--config-dir"]
    return bool(argv) and argv[0] == target.engine and bool(at) and config == [
        target.config_dir]


def next_firing(timing):
    """The next time a 5-field cron time fires, or None when it is no cron time."""
    from croniter import croniter

    try:
        return croniter(timing, datetime.now()).get_next(datetime)
    except (ValueError, KeyError, TypeError):
        return None


def check_cron(target, jobs, problems):
    prefix = target.vars.get("strongroom_jobs_cron_prefix")
    res = target.run(["crontab", "-l"])
    if res.rc != 0 and "no crontab" not in res.stderr:
        problems.append(f"cannot read the crontab (exit {res.rc}): {one_line(res.stderr)}")
        return
    entries = crontab_entries(res.stdout if res.rc == 0 else "")
    user = target.facts.get("user_id", "the connecting user")
    anacron_wanted = False
    tab_path = f"{target.config_dir}/anacrontab"
    tab = target.host.file(tab_path)
    anacrontab = {}
    if tab.exists:
        for line in tab.content_string.splitlines():
            fields = line.split("\t", 3) if not line.startswith("#") else []
            if len(fields) == 4:
                anacrontab[fields[2]] = fields
    for job, spec in jobs.items():
        explained = rendering(target, job, spec, "cron", problems)
        if explained is None:
            continue
        line = entries.get(f"{prefix} job {job}")
        if line is None:
            problems.append(f"job {job} has no crontab line (no '#Ansible: {prefix} job {job}' "
                            f"entry in {user}'s crontab)")
        elif line.startswith("#"):
            problems.append(f"job {job}'s crontab line is commented out: {line}")
        else:
            fields = line.split(None, 5)
            timing = " ".join(fields[:5])
            if len(fields) < 6:
                problems.append(f"job {job}'s crontab line is malformed: {line}")
            elif timing != explained["cron"]:
                problems.append(f"job {job}'s crontab line runs at {timing!r}; its schedule "
                                f"{spec!r} is {explained['cron']!r}")
            elif next_firing(timing) is None:
                problems.append(f"job {job}'s crontab line has no next firing time: "
                                f"{timing!r} is not a cron time")
            elif not runs_job(shlex.split(fields[5]), target, job, if_due=True):
                problems.append(f"job {job}'s crontab line does not run `{target.engine} "
                                f"--config-dir {target.config_dir} ... run {job} --if-due`: "
                                f"{fields[5]}")
        if explained.get("anacron"):
            anacron_wanted = True
            want = explained["anacron"]
            entry = anacrontab.get(f"strongroom.{job}")
            if entry is None:
                problems.append(f"job {job} has no anacrontab entry in {tab_path} (runs "
                                "missed while the machine was off are not caught up)")
            elif (entry[0], entry[1]) != (str(want["period"]), str(want["delay"])):
                problems.append(f"job {job}'s anacrontab entry has period {entry[0]} and "
                                f"delay {entry[1]}; its schedule {spec!r} needs "
                                f"{want['period']} and {want['delay']}")
            elif not runs_job(shlex.split(entry[3]), target, job, if_due=True):
                problems.append(f"job {job}'s anacrontab entry does not run it: {entry[3]}")
    if anacron_wanted:
        for name, special in (("hourly", "@hourly"), ("at boot", "@reboot")):
            line = entries.get(f"{prefix} anacron {name}", "")
            if not line.startswith(f"{special} ") or (
                    tab_path not in line and shlex.quote(tab_path) not in line):
                problems.append(f"the crontab has no '{special}' anacron entry for {tab_path} "
                                "(missed runs are never caught up)")
    for name in entries:
        job = name.removeprefix(f"{prefix} job ")
        if name.startswith(f"{prefix} job ") and unscheduled(target, job):
            problems.append(f"the crontab runs job {job}, which has no job file with a "
                            "schedule")


def listed(values):
    return ", ".join(values) if values else "(none)"


def unit_settings(text):
    """{key: [values]} of a unit file (keys repeat: OnCalendar=...)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def next_elapse(target, calendar):
    """`systemd-analyze calendar`'s next elapse, on the host (or here when it has none)."""
    argv = ["systemd-analyze", "calendar", calendar]
    if target.run(["sh", "-c", "command -v systemd-analyze"]).rc == 0:
        res = target.run(argv)
        out, rc, err = res.stdout, res.rc, res.stderr
    else:
        import shutil
        import subprocess

        if not shutil.which("systemd-analyze"):
            return None, "systemd-analyze is on neither the host nor the controller"
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        out, rc, err = proc.stdout, proc.returncode, proc.stderr
    for line in out.splitlines():
        if line.strip().startswith("Next elapse:"):
            value = line.split(":", 1)[1].strip()
            return (value, None) if value and value != "never" else (None, "never elapses")
    return None, one_line(err) or f"exit {rc}, no next elapse"


def status_next_due(target, job):
    status = target.status()
    if isinstance(status, str):
        return None, status
    for row in status.get("jobs", []):
        if row.get("job") == job:
            if not row.get("valid"):
                return "unknown", None  # an invalid job file is the job file check's
            if row.get("due"):
                return "now", None
            return row.get("next_due"), None if row.get("next_due") else "no next due time"
    return None, "the engine does not list it"


def check_systemd(target, jobs, problems):
    units = target.vars.get("strongroom_jobs_systemd_dir")
    for job, spec in jobs.items():
        explained = rendering(target, job, spec, "systemd", problems)
        if explained is None:
            continue
        want = explained["systemd"]
        timer_path = f"{units}/strongroom-{job}.timer"
        service_path = f"{units}/strongroom-{job}.service"
        timer = target.host.file(timer_path)
        if not timer.exists:
            problems.append(f"job {job} has no systemd timer ({timer_path} is missing)")
            continue
        service = target.host.file(service_path)
        if not service.exists:
            problems.append(f"job {job}'s timer has no service ({service_path} is missing)")
        else:
            exec_start = unit_settings(service.content_string).get("ExecStart", [""])[-1]
            if not runs_job(shlex.split(exec_start), target, job, if_due=False):
                problems.append(f"job {job}'s service does not run `{target.engine} "
                                f"--config-dir {target.config_dir} ... run {job}`: "
                                f"{exec_start}")
        settings = unit_settings(timer.content_string)
        if want.get("OnCalendar"):
            have = settings.get("OnCalendar", [])
            if have != want["OnCalendar"]:
                problems.append(f"job {job}'s timer has OnCalendar={listed(have)}; its "
                                f"schedule {spec!r} is OnCalendar={listed(want['OnCalendar'])}")
                continue
            for calendar in have:
                when, why = next_elapse(target, calendar)
                if when is None:
                    problems.append(f"job {job}'s timer OnCalendar={calendar} has no next "
                                    f"elapse: {why}")
        else:
            have = settings.get("OnUnitActiveSec", [])
            if have != [want.get("OnUnitActiveSec")]:
                problems.append(f"job {job}'s timer has OnUnitActiveSec={listed(have)}; its "
                                f"schedule {spec!r} is "
                                f"OnUnitActiveSec={want.get('OnUnitActiveSec')}")
                continue
            when, why = status_next_due(target, job)
            if when is None:
                problems.append(f"cannot tell when job {job}'s timer fires next: {why}")
    found = target.host.file(units)
    if found.is_directory:
        for name in found.listdir():
            job = name.removeprefix("strongroom-").removesuffix(".timer")
            if name.startswith("strongroom-") and name.endswith(".timer") and unscheduled(
                    target, job):
                problems.append(f"{units}/{name} runs job {job}, which has no job file with a "
                                "schedule")


def check_launchd(target, jobs, problems):
    agents = target.vars.get("strongroom_jobs_launchd_dir")
    for job, spec in jobs.items():
        explained = rendering(target, job, spec, "launchd", problems)
        if explained is None:
            continue
        path = f"{agents}/org.strongroom.{job}.plist"
        f = target.host.file(path)
        if not f.exists:
            problems.append(f"job {job} has no launchd plist ({path} is missing)")
            continue
        try:
            plist = plistlib.loads(f.content)
        except Exception as exc:  # plistlib raises several kinds for a damaged file
            problems.append(f"job {job}'s plist {path} does not parse: {one_line(exc)}")
            continue
        args = plist.get("ProgramArguments") or []
        if plist.get("Label") != f"org.strongroom.{job}":
            problems.append(f"job {job}'s plist has Label {plist.get('Label')!r}")
        if not runs_job(list(map(str, args)), target, job, if_due=False):
            problems.append(f"job {job}'s plist does not run `{target.engine} --config-dir "
                            f"{target.config_dir} ... run {job}`: {args}")
        want = explained["launchd"]
        for key in ("StartInterval", "StartCalendarInterval"):
            if plist.get(key) != want.get(key):
                problems.append(f"job {job}'s plist has {key} {plist.get(key)!r}; its "
                                f"schedule {spec!r} is {want.get(key)!r}")
    found = target.host.file(agents)
    if found.is_directory:
        for name in found.listdir():
            job = name.removeprefix("org.strongroom.").removesuffix(".plist")
            if name.startswith("org.strongroom.") and name.endswith(".plist") and (
                    unscheduled(target, job)):
                problems.append(f"{agents}/{name} runs job {job}, which has no job file with "
                                "a schedule")


def check_leftovers(target, problems):
    """The role removes the other schedulers' entries; one left behind runs a job too."""
    backend = target.backend
    if backend != "cron":
        prefix = target.vars.get("strongroom_jobs_cron_prefix")
        res = target.run(["sh", "-c", "command -v crontab >/dev/null && crontab -l"])
        names = [n.removeprefix(f"{prefix} ") for n in crontab_entries(res.stdout)
                 if n.startswith(f"{prefix} ")] if res.rc == 0 else []
        if names:
            problems.append(f"the crontab still has entries ({', '.join(names)}) although "
                            f"the scheduler is {backend}")
    for other, where, start, end in (
            ("systemd", "strongroom_jobs_systemd_dir", "strongroom-", (".timer", ".service")),
            ("launchd", "strongroom_jobs_launchd_dir", "org.strongroom.", (".plist",))):
        if backend == other:
            continue
        found = target.host.file(target.vars.get(where))
        names = [n for n in (found.listdir() if found.is_directory else [])
                 if n.startswith(start) and n.endswith(end)]
        if names:
            problems.append(f"{found.path} still has {', '.join(sorted(names))} although the "
                            f"scheduler is {backend}")


@pytest.mark.check("schedules")
def test_every_schedule_is_installed(target):
    problems = []
    jobs = scheduled_jobs(target)
    try:
        if target.backend != "none":
            {"cron": check_cron, "systemd": check_systemd, "launchd": check_launchd}[
                target.backend](target, jobs, problems)
        check_leftovers(target, problems)
    except Unresolved as exc:
        problems.append(f"cannot work out where its scheduler entries go: {exc}")
    report(target, problems)


# --- 4. secret files ------------------------------------------------------------------------


@pytest.mark.check("secrets")
def test_secret_files_are_private(target):
    problems = []
    conf = target.config_dir
    wanted = {}
    try:
        if target.vars.get("strongroom_rclone_remotes", deep=False):
            wanted[f"{conf}/rclone.conf"] = "the inventory has rclone remotes"
        if target.vars.get("strongroom_notify_targets", deep=False):
            wanted[f"{conf}/notify.yml"] = "the inventory has notification targets"
        for name in target.vars.get("strongroom_secret_files", deep=False) or {}:
            wanted[f"{conf}/secrets/{name}"] = "the inventory has that secret file"
    except Unresolved as exc:
        problems.append(f"cannot work out which secret files it should have: {exc}")
    paths = dict(wanted)
    for path in (f"{conf}/rclone.conf", f"{conf}/notify.yml"):
        paths.setdefault(path, None)
    secrets = target.host.file(f"{conf}/secrets")
    if secrets.is_directory:
        if secrets.mode != 0o700:
            problems.append(f"{conf}/secrets has mode {secrets.mode:04o}; it must be 0700")
        for name in secrets.listdir():
            paths.setdefault(f"{conf}/secrets/{name}", None)
    for path, why in sorted(paths.items()):
        f = target.host.file(path)
        if f.is_symlink:
            problems.append(f"{path} is a symbolic link; a secret file must be a file, 0600")
        elif not f.exists:
            if why:
                problems.append(f"{path} is missing ({why})")
        elif f.mode != 0o600:
            problems.append(f"{path} has mode {f.mode:04o}; a secret file must be 0600")
    report(target, problems)


# --- 5. staleness ---------------------------------------------------------------------------


@pytest.mark.check("staleness")
def test_no_job_is_stale(target):
    status = target.status()
    if isinstance(status, str):
        report(target, [f"cannot read its jobs' status: {status}"])
    problems = []
    now = datetime.now(UTC)
    for row in status.get("jobs", []):
        if not row.get("valid") or not row.get("stale"):
            continue  # an invalid job file is the job file check's
        limit = row.get("stale_after_seconds")
        after = f"a {row.get('schedule')} job is stale after {human(limit)} without a success"
        if row.get("last_success"):
            last = datetime.strptime(row["last_success"], "%Y-%m-%dT%H:%M:%SZ").replace(
                tzinfo=UTC)
            problems.append(f"job {row['job']} is stale: last success {row['last_success']} "
                            f"({human((now - last).total_seconds())} ago); {after}")
        else:
            problems.append(f"job {row['job']} is stale: no success since its job file was "
                            f"installed (last result: {row.get('result')}); {after}")
    report(target, problems)

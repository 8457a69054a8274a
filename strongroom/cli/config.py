"""`strongroom config check|show|generate|schema`: job files against the one schema
(strongroom/jobs/schema.py).

  check FILE|-      the checks `run` makes, every error at once; an old type name is a
                    warning (the file stays valid, exit 0); an encrypt_to that run would
                    refuse, or that seals nothing, is a warning with exit 1
  show JOB          the job as the engine runs it: every default filled in, as YAML
                    (--json: in the envelope, under "job")
  generate TYPE     a commented example job file: each option with what it means and its
                    default; required options hold a <placeholder> to fill in
  schema            the job-file schema as JSON Schema (draft 2020-12)
"""

import json
import sys
import textwrap
from pathlib import Path

from ..core.errors import OK, WARNING, StrongroomError
from ..core.fsutil import atomic_write_bytes
from ..jobs import config, registry, schema
from . import output

WIDTH = 88


def cmd_check(args):
    notes = []
    data, where = config.check_file(args.file, args.name_as, notes=notes)
    files_said = _sealing_notes(data, args.config_dir)
    message = f"{where}: valid {data['type']} job '{data['name']}'"
    output.say(args, message)
    notes += files_said
    for note in notes:
        output.warn(note)
    # the job file is valid; a recipients file that `run` would refuse is still worth a 1
    return output.emit(args, WARNING if files_said else OK, message, {
        "file": where, "name": data["name"], "type": schema.canonical(data["type"]),
        "type_as_written": data["type"], "warnings": notes})


def _sealing_notes(job, config_dir):
    """What `run` would refuse or ignore in the job's encrypt_to: a recipients file that is
    missing or does not parse (file and line, as run says it; a relative path is taken
    from the config dir), or one on a job that sends nothing off-site."""
    from ..upload.seal import for_options

    o = job.get("options") or {}
    seal = for_options(o, config_dir)
    if seal is None:
        return []
    if not o.get("remote") and job["type"] != "db":
        return ["encrypt_to seals what goes off-site, and this job has no remote: nothing "
                "is sealed"]
    try:
        seal.check()
    except StrongroomError as exc:
        return [f"encrypt_to: {exc}"]
    return []


def cmd_show(args):
    notes = []
    job = config.load_job(args.config_dir, args.job_name, notes=notes)
    for note in notes:
        output.warn(note)
    from ..ping import redact

    effective = redact.job(config.effective(job))  # the ping URL is a secret: scheme://host/…
    message = f"job {job['name']}: a {job['type']} job, every default filled in"
    if not getattr(args, "json", False):
        sys.stdout.write(show_text(effective))
        return OK
    return output.emit(args, OK, message, {"job": effective})


def cmd_generate(args):
    jt = _job_type(args.job_type)
    if args.job_type != jt.name:
        output.deprecated(args.job_type, jt.name)
    name = args.name
    if name is None and args.output and Path(args.output).name.endswith(".yml"):
        name = Path(args.output).name[:-4]  # a job in NAME.yml is named NAME
    name = config.check_job_name(name or jt.name)
    text = example_text(jt.name, name)
    if args.output:
        out = Path(args.output)
        if out.exists() and not args.force:
            raise StrongroomError(f"{out} exists; give --force to replace it")
        atomic_write_bytes(out, text.encode("utf-8"), mode=0o644)
        message = f"wrote an example {jt.name} job to {out}"
        output.say(args, message)
    else:
        message = f"an example {jt.name} job"
        if not getattr(args, "json", False):
            sys.stdout.write(text)
    return output.emit(args, OK, message, {"type": jt.name, "name": name,
                                           "file": args.output, "text": text})


def cmd_schema(args):
    doc = schema.json_schema()
    if not getattr(args, "json", False):
        json.dump(doc, sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
        return OK
    return output.emit(args, OK, "the job-file schema (JSON Schema, draft 2020-12)",
                       {"schema": doc})


def _job_type(name):
    try:
        return schema.job_type(name)
    except KeyError:
        raise StrongroomError(f"no job type {name!r}: expected one of: "
                              f"{', '.join(schema.TYPE_NAMES)}") from None


# --- the texts ---------------------------------------------------------------------------


def _yaml(mapping, flow=False):
    """Block style; flow=True: a collection value in flow style ([a, b]) under its key."""
    import yaml

    return yaml.safe_dump(mapping, sort_keys=False, default_flow_style=None if flow else False,
                          width=WIDTH - 4, allow_unicode=True)


def _comment(text, indent=""):
    return [f"{indent}# {line}" for line in textwrap.wrap(text, WIDTH - len(indent) - 2)]


def _setting(key, value, indent="", commented=False):
    lines = _yaml({key: value}, flow=bool(value) and isinstance(value, list | dict)).splitlines()
    if commented:
        return [f"{indent}# {line}" for line in lines]
    return [f"{indent}{line}" for line in lines]


def _default_words(opt):
    if opt.required:
        return "Required."
    if opt.has_default:
        return f"Default: {opt.shown_default()}."
    return f"Default: {opt.default_text}." if opt.default_text else ""


def _option_lines(opt, indent, in_block=False):
    """An option's description and its setting: a required one with its placeholder, any
    other commented out with its default (in_block: the whole block is commented out
    after, so the setting is left as it is)."""
    lines = _comment(f"{opt.description} {_default_words(opt)}".strip(), indent)
    if opt.required:
        value = opt.placeholder_value()
        if opt.kind.problem(value) is None:  # a placeholder of any text would pass: empty
            return lines + [f"{indent}{opt.name}:  # fill in: {value}"]
        return lines + _setting(opt.name, value, indent)
    value = opt.default_value() if opt.has_default else opt.placeholder_value()
    return lines + _setting(opt.name, value, indent, commented=not in_block)


def _commented_block(key, options):
    """`# key:` and its options, each line commented out once (uncommenting the key and the
    settings wanted makes a valid mapping; descriptions stay comments)."""
    lines = [f"{key}:"]
    for opt in options:
        lines += _option_lines(opt, "  ", in_block=True)
    return [f"# {line}" for line in lines]


def example_text(type_name, name):
    """A commented example job file of this type, named NAME."""
    jt = schema.job_type(type_name)
    entry = registry.get(jt.name)
    lines = _comment(f"A {jt.name} job: {jt.summary}.")
    lines += _comment(f"Written by `strongroom config generate {jt.name}`. Fill in each "
                      "<placeholder>; an option left commented out takes the default it "
                      "shows. Then check the file with `strongroom config check FILE`.")
    lines.append("")
    lines += _comment(schema.JOB["name"].description)
    lines += _setting("name", name)
    lines += _setting("type", jt.name)
    sched = schema.JOB["schedule"]
    role = (f" In the inventory, a {jt.name} job without one gets {entry.default_schedule} "
            "(strongroom_jobs_type_schedules)." if entry.default_schedule else "")
    lines += _comment(f"{sched.description} Default: {sched.default_text}.{role}")
    lines += _setting("schedule", entry.default_schedule or "daily 01:00", commented=True)
    lines += _comment(schema.JOB["description"].description)
    lines += _setting("description", f"{jt.name} job", commented=True)
    lines += _comment(f"The {jt.name} job's options.")
    if jt.options.required:
        lines.append("options:")
        for opt in jt.options:
            lines += _option_lines(opt, "  ")
    else:  # none required: the whole mapping is commented out
        lines += _commented_block("options", jt.options)
    for key, section in schema.SUBSECTIONS.items():
        lines += _comment(schema.JOB[key].description)
        lines += _commented_block(key, section)
    return "\n".join(lines) + "\n"


def show_text(effective):
    """The effective job as YAML, then what the engine works out when the job runs."""
    jt = schema.job_type(effective["type"])
    lines = _comment(f"Job {effective['name']} as the engine runs it: every default filled "
                     "in (`strongroom config show`).")
    body = _yaml(effective).rstrip("\n").splitlines()
    later = [o for o in jt.options if o.name not in effective["options"]]
    if "schedule" not in effective:
        body += _comment(f"schedule: {schema.JOB['schedule'].default_text}")
    if later:
        body += _comment("Worked out when the job runs:")
        for opt in later:
            body += _comment(f"options.{opt.name}: {opt.default_text}", "  ")
    return "\n".join(lines + body) + "\n"


# --- the parser ----------------------------------------------------------------------------


def add_parser(sub):
    _, csub = output.group(sub, "config", help="job files: check, show, generate, schema")
    chk = output.verb(csub, "check", help="validate a job file against the schema",
                      epilog=output.epilog("2 when the file is not a valid job (every "
                                           "error is said, one line each)"))
    chk.add_argument("file", help="job file (YAML), or - for standard input")
    chk.add_argument("--name-as", help="name to use for the file in messages; when it (or "
                     "FILE) ends in .yml, the job's `name` must be that file name without "
                     ".yml, as `run` requires")
    chk.set_defaults(func=cmd_check)
    sh = output.verb(csub, "show", help="the job as the engine runs it, every default filled "
                     "in (YAML; --json: under \"job\")")
    sh.add_argument("job_name", metavar="JOB", help="job name: <config-dir>/jobs/JOB.yml")
    sh.set_defaults(func=cmd_show)
    gen = output.verb(csub, "generate", help="a commented example job file of a type",
                      description="A commented example job file: every option of the type "
                                  "with what it means and its default; required options "
                                  "hold a <placeholder> to fill in. Types: "
                                  + ", ".join(schema.TYPE_NAMES) + ".")
    gen.add_argument("job_type", metavar="TYPE", help="the job type: "
                     + ", ".join(schema.TYPE_NAMES))
    gen.add_argument("--output", metavar="FILE", help="write it here (default: standard "
                     "output); a FILE named NAME.yml names the job NAME")
    gen.add_argument("--name", help="the job's name (default: FILE's name, else the type)")
    gen.add_argument("--force", action="store_true", help="replace FILE when it exists")
    gen.set_defaults(func=cmd_generate)
    sc = output.verb(csub, "schema", help="the job-file schema as JSON Schema (draft "
                     "2020-12)")
    sc.set_defaults(func=cmd_schema)

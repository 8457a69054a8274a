"""--job NAME on every verb: the job file, refused when it is of a type the verb does not
take, with one message everywhere."""

from ..core.errors import ConfigError
from ..jobs import config

# the job types each command takes with --job (by the names or old names the schema knows)
TYPES = {
    "bundle": ("bundle_sync",),
    "sync": ("git_sync",),
    "snapshot": ("snapshot",),
    "hook": ("snapshot",),
    "checkpoint": ("checkpoint",),
    "rollup": ("daily", "rollup"),
    "db": ("db_backup",),
    "bisync": ("bisync",),
    "restic": ("restic",),
}


def canonical(type_name):
    """A type's name as the job files' schema has it now (an old name maps to it)."""
    from ..jobs import schema

    named = getattr(schema, "canonical", None)
    return (named(type_name) if named else None) or type_name


def takes(command):
    """The job types `strongroom COMMAND` takes, by their current names."""
    if command == "drill":  # every type whose registry row names a drill
        from ..jobs import registry

        return registry.drilled_types()
    return tuple(dict.fromkeys(canonical(t) for t in TYPES[command]))


def wrong_type(name, kind, command, types):
    return ConfigError(f"job {name} is a {kind} job; `strongroom {command}` takes "
                       f"{' or '.join(types)} jobs")


def load(config_dir, name, command):
    """The job NAME, refused (exit 2) unless its type is one `strongroom COMMAND` takes."""
    job = config.load_job(config_dir, name)
    types = takes(command)
    if canonical(job["type"]) not in types:
        raise wrong_type(name, job["type"], command, types)
    return job


def options(args, command):
    """A copy of --job NAME's options ({} without --job), type checked."""
    name = getattr(args, "job", None)
    if not name:
        return {}
    return dict(load(args.config_dir, name, command)["options"])


def paths(args):
    from ..jobs import Paths

    return Paths(args.config_dir, args.state_dir, args.log_dir)

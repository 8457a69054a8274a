"""The exported JSON Schema and the engine's validator agree: on every example job (the
inventories' jobs, rendered as the role renders them, and every job file the tests write)
and on random option mappings of every job type, valid and invalid alike."""

import json

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strongroom.jobs import config, schema
from tests.jobs.helpers import documents_in_the_tests, inventory_jobs

VALIDATOR = jsonschema.Draft202012Validator(schema.json_schema())


def engine_errors(doc):
    return config.job_errors(doc, "job.yml")


def schema_errors(doc):
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in VALIDATOR.iter_errors(doc)]


def agree(doc):
    """Both valid, or both not; the message says what each one found."""
    engine, exported = engine_errors(doc), schema_errors(doc)
    assert bool(engine) == bool(exported), (
        f"{json.dumps(doc, default=str)[:600]}\nengine: {engine}\njson schema: {exported}")
    return not engine


def test_the_export_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(schema.json_schema())
    doc = schema.json_schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert set(doc["properties"]) == set(schema.JOB.names)
    # one branch per type, each naming the type's old names too
    assert [b["if"]["properties"]["type"]["enum"] for b in doc["allOf"]] == [
        list(t.names) for t in schema.TYPES]
    # defaults and descriptions travel with the options
    full_every = doc["$defs"]["options.bundle"]["properties"]["full_every"]
    assert full_every["default"] == 10 and full_every["minimum"] == 1
    assert full_every["description"] == schema.options("bundle")["full_every"].description


@pytest.mark.parametrize("inventory", ["example", "local"])
def test_every_inventory_job_is_valid_to_both(inventory):
    jobs = inventory_jobs(inventory)
    assert len(jobs) >= (10 if inventory == "example" else 3)
    for host, job in jobs:
        assert agree(job), f"{inventory} {host} {job['name']}"
        # and by the type's one-word name as well as its old one
        assert agree({**job, "type": schema.canonical(job["type"])})
    types = {schema.canonical(j["type"]) for _, j in jobs}
    if inventory == "example":
        assert types >= {"bundle", "drill", "status", "sync", "snapshot", "checkpoint",
                         "daily", "rollup", "bisync", "restic", "db"}


def test_every_job_file_the_tests_write_gets_one_verdict_from_both():
    docs = documents_in_the_tests()
    valid = [where for where, doc in docs if agree(doc)]
    invalid = [where for where, doc in docs if where not in valid]
    # many are valid jobs and some are wrong on purpose: both kinds are compared
    assert len(valid) >= 20 and len(invalid) >= 8, (len(valid), len(invalid))


@pytest.mark.parametrize("patch", [
    {"name": "../etc"}, {"name": "ok\n"}, {"name": "x" * 65}, {"type": "bundle_synk"},
    {"schedule": "dayly 01:00"}, {"schedule": ""}, {"schedule": 5}, {"options": None},
    {"options": {"root": "/a", "store": "/b", "full_every": 0}},
    {"options": {"root": "/a", "store": "/b", "full_every": True}},
    {"options": {"root": "relative", "store": "/b"}},
    {"options": {"root": "/a"}}, {"options": {"root": "/a", "store": "/b", "extra": 1}},
    {"notify": {"events": ["job_failed", "test"]}}, {"notify": {"min_severity": "loud"}},
    {"log": {"max_bytes": 1000}}, {"log": {"keep": 0}}, {"log": []},
    {"extra": True}, {"description": "  "},
])
def test_an_invalid_job_is_invalid_to_both(patch):
    doc = {"name": "j", "type": "bundle_sync", "schedule": "daily 01:00",
           "options": {"root": "/a", "store": "/b"}, **patch}
    assert not agree(doc)


# --- random documents ----------------------------------------------------------------------

# Values JSON and YAML both hold, drawn so that the exported schema's known looseness (see
# strongroom/jobs/schema.py) is not what is compared: no integral floats (10.0 is an integer
# to JSON Schema only), no `~name` paths (the engine asks the user database), schedules of
# a valid shape only when they are valid specs.
_floats = st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer())
_text = st.text(max_size=12).filter(lambda s: not s.startswith("~"))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2 ** 40), _floats, _text)
_anything = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=6)
_paths = st.one_of(st.sampled_from(["/", "~", "~/x", "~root/x", "/a b", "relative/x", "", " ",
                                    "./x", "\n/x"]),
                   _text.map(lambda s: "/" + s), _text)
_schedules = st.sampled_from(["daily 01:00", "weekly sun 04:30", "monthly 28 23:59",
                              "every 15m", "every 2h", "*/5 * * * *", "0 3 * * 1-5",
                              "DAILY 7:05", "daily", "every", "daily 24:00", "hourly",
                              "daily 1:00 x", "", "  ", "1 2 3 4"])


_nonblank = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() != "")
_valid_paths = st.one_of(_text.map(lambda s: "/" + s), st.sampled_from(["~", "~/x", "/"]))
_valid_schedules = st.sampled_from(["daily 01:00", "weekly sun 04:30", "monthly 28 23:59",
                                    "every 15m", "every 2h", "*/5 * * * *", "DAILY 7:05"])
_names = st.from_regex(schema.JOB_NAME_RE, fullmatch=True)


def _valid(kind):
    """A strategy of valid values of a kind."""
    if kind is schema.PATH:
        return _valid_paths
    if kind is schema.PATH_LIST:
        return st.lists(_valid_paths, max_size=3)
    if kind is schema.SCHEDULE:
        return _valid_schedules
    if kind is schema.SIZE:
        return st.one_of(st.integers(0, 10 ** 12), st.sampled_from(["50M", "2G", " 1.5 gib "]))
    if kind is schema.JOB_NAME:
        return _names
    if kind is schema.JOB_NAME_LIST:
        return st.lists(_names, max_size=3)
    if kind is schema.POLICY_MAP:
        return st.dictionaries(_nonblank, st.sampled_from(schema.POLICIES), max_size=3)
    if kind is schema.BOOL:
        return st.booleans()
    if kind.choices:
        one = st.sampled_from(kind.choices)
        return st.lists(one, max_size=3) if kind.ansible == "list" else one
    if kind.ansible in ("int", "float"):
        low = kind.json["minimum"]
        ints = st.integers(low, 2 ** 70)
        return ints if kind.ansible == "int" else st.one_of(ints, _floats.filter(
            lambda x: x >= low))
    if kind.ansible == "list":
        return st.lists(_nonblank, max_size=3)
    return _nonblank


def _values(kind):
    """A strategy of values of a kind, valid and not."""
    if kind is None:
        return _anything
    if kind is schema.PATH:
        mine = _paths
    elif kind is schema.PATH_LIST:
        mine = st.lists(_paths, max_size=3)
    elif kind is schema.SCHEDULE:
        mine = _schedules
    elif kind is schema.SIZE:
        mine = st.one_of(st.integers(-3, 10 ** 12),
                         st.sampled_from(["50M", "2G", " 1.5 gib ", "10", "10 kB", "M", "5X",
                                          "-1", "5M\n", "\u0663M"]))
    elif kind is schema.JOB_NAME or kind is schema.JOB_NAME_LIST:
        names = st.one_of(_names, st.sampled_from(["../x", "a b", "-rf", "x\n", "x" * 65]))
        mine = names if kind is schema.JOB_NAME else st.lists(names, max_size=3)
    elif kind.choices and kind.ansible == "list":
        mine = st.lists(st.one_of(st.sampled_from(kind.choices), _text), max_size=3)
    elif kind.choices:
        mine = st.one_of(st.sampled_from(kind.choices), _text)
    elif kind.ansible == "int":
        mine = st.integers(-3, 2 ** 70)
    elif kind.ansible == "float":
        mine = st.one_of(st.integers(-3, 10 ** 6), _floats)
    elif kind.ansible == "list":
        mine = st.lists(_text, max_size=3)
    elif kind is schema.POLICY_MAP:
        mine = st.dictionaries(_text, st.one_of(st.sampled_from(schema.POLICIES), _text),
                               max_size=3)
    else:
        mine = _text
    return st.one_of(_valid(kind), mine, _scalars, _anything)


def _some(draw, section):
    """A valid mapping of a section: its required options and some of the others."""
    return {o.name: draw(_valid(o.kind)) for o in section
            if o.required or draw(st.integers(0, 2)) == 0}


@st.composite
def _job(draw, t):
    """A valid job of type t, then none to three changes of any kind: a value of any
    shape, a key taken out or one no schema has."""
    doc = {"name": draw(_names), "type": draw(st.sampled_from(t.names))}
    opts = _some(draw, t.options)
    if opts or t.options.required or draw(st.booleans()):
        doc["options"] = opts
    if draw(st.booleans()):
        doc["schedule"] = draw(_valid_schedules)
    for key, section in schema.SUBSECTIONS.items():
        if draw(st.integers(0, 3)) == 0:
            doc[key] = _some(draw, section)
    for _ in range(draw(st.integers(0, 3))):
        where = draw(st.sampled_from(["job", "options", "notify", "log"]))
        section = {"job": schema.JOB, "options": t.options, **schema.SUBSECTIONS}[where]
        target = doc if where == "job" else doc.get(where)
        if not isinstance(target, dict):
            doc[where] = draw(_anything)
            continue
        key = draw(st.sampled_from([*section.names, "unknown_key"]))
        if key in target and draw(st.integers(0, 3)) == 0:
            del target[key]
        elif key == "type" and where == "job":
            target[key] = draw(st.one_of(st.sampled_from(schema.ALL_TYPE_NAMES), _scalars))
        elif key in section.names and section[key].kind is not None:
            target[key] = draw(_values(section[key].kind))
        else:
            target[key] = draw(_anything)
    return doc


@pytest.mark.parametrize("job_type", schema.TYPE_NAMES)
def test_random_jobs_get_one_verdict_from_both(job_type):
    """Valid jobs of the type, and each changed in up to three places: both validators
    give every one the same verdict, and both verdicts are reached often."""
    seen = {"valid": 0, "invalid": 0}

    @settings(max_examples=250, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(doc=_job(schema.job_type(job_type)))
    def compare(doc):
        seen["valid" if agree(doc) else "invalid"] += 1

    compare()
    assert seen["valid"] >= 25 and seen["invalid"] >= 60, seen

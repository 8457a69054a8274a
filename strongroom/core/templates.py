"""The templates a user may customize: notification titles and bodies, reports.

One copy lives at the top of the source tree (templates/) and ships inside the engine as
the package strongroom.templates. A host overrides any of them by putting a file of the same
name in <config-dir>/templates/: that folder is searched first, the shipped copy after it,
so an override may also {% extends %} or {% include %} the shipped file it replaces by the
name "shipped/NAME".
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "templates"  # installed: strongroom/templates
SOURCE_TREE = Path(__file__).resolve().parents[2] / "templates"  # a checkout's templates/


def shipped_dir():
    """Where the shipped templates are: inside the installed engine (the wheel puts them
    in strongroom/templates/), or the source tree's templates/ when the engine runs from a
    checkout (an editable install maps the package there without copying)."""
    for d in (PACKAGE, SOURCE_TREE):
        if (d / "notify_title.j2").is_file():
            return d
    return PACKAGE


def environment(config_dir=None, autoescape=False):
    """A Jinja2 environment that finds <config-dir>/templates/NAME first, then the shipped
    NAME (also reachable as shipped/NAME)."""
    import jinja2

    shipped = jinja2.FileSystemLoader(str(shipped_dir()))
    loaders = []
    if config_dir is not None:
        loaders.append(jinja2.FileSystemLoader(str(Path(config_dir) / "templates")))
    loaders.append(shipped)
    loader = jinja2.PrefixLoader({"shipped": shipped}, delimiter="/")
    return jinja2.Environment(loader=jinja2.ChoiceLoader([*loaders, loader]),
                              autoescape=autoescape,  # noqa: S701 -- plain text unless asked
                              trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=False)

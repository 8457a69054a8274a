"""`strongroom manifest create | verify | update | export`: SHA-256 manifests of a tree."""

import sys
from pathlib import Path

from ..core.errors import ERROR, OK, WARNING
from . import output
from .output import human_bytes


def _report(verdict, manifest_path, mode):
    lines = []
    for rel in verdict.mismatched:
        lines.append(f"MISMATCH  {rel}")
    for rel in verdict.missing:
        lines.append(f"MISSING   {rel}")
    for rel, err in sorted(verdict.unreadable.items()):
        lines.append(f"UNREADABLE {rel}: {err}")
    for rel in verdict.new:
        lines.append(f"new       {rel}  (not in the manifest; not a failure)")
    checked = len(verdict.ok) + len(verdict.mismatched) + len(verdict.unreadable)
    summary = (f"{'OK' if verdict.passed else 'FAILED'}: {checked + len(verdict.missing)} "
               f"files in {manifest_path} ({mode}: {verdict.hashed} hashed, "
               f"{verdict.trusted_by_stat} unchanged by size/mtime/inode); "
               f"{len(verdict.mismatched)} mismatched, {len(verdict.missing)} missing, "
               f"{len(verdict.new)} new")
    return lines, summary


def cmd_export(args):
    from .. import manifest

    data = manifest.load(args.manifest)
    text = manifest.sha256sum_lines(data)
    files = len(data.get("checksums") or {})
    if args.out:
        from ..core.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(args.out), text.encode("utf-8", "surrogateescape"))
        message = f"wrote {args.out}: {files} line(s) for sha256sum -c --strict"
        output.say(args, message)
        return output.emit(args, OK, message, {"manifest": args.manifest, "out": args.out,
                                               "files": files})
    message = f"{files} line(s) for sha256sum -c --strict"
    if args.json:  # the lines themselves, inside the object
        return output.emit(args, OK, message, {"manifest": args.manifest, "files": files,
                                               "sha256sum": text})
    sys.stdout.buffer.write(text.encode("utf-8", "surrogateescape"))  # the product itself
    return OK


def cmd_verify(args):
    from .. import manifest

    mode = "fast" if args.fast else "deep"
    output.progress(args, f"checking {args.root} against {args.manifest} ({mode})")
    skip = manifest.own_files(args.manifest)
    # --fast reads the stat index beside the manifest when it was made for these bytes:
    # the same verdict without parsing the JSON of a large tree
    verdict = manifest.verify_indexed(args.root, args.manifest, jobs=args.jobs,
                                      skip=skip) if args.fast else None
    if verdict is None:
        verdict = manifest.verify(args.root, manifest.load(args.manifest), fast=args.fast,
                                  jobs=args.jobs, skip=skip)
    lines, summary = _report(verdict, args.manifest, mode)
    listed = len(verdict.ok) + len(verdict.mismatched) + len(verdict.unreadable) + \
        len(verdict.missing)
    if not listed:
        code, summary = WARNING, (f"{output.NOTHING_TO_VERIFY}: {args.manifest} lists no "
                                  "files")
    else:
        code = OK if verdict.passed else ERROR
    output.say(args, *lines, summary)
    return output.emit(args, code, summary, {"manifest": args.manifest, "mode": mode,
                                             **verdict.as_dict()})


def cmd_build(args):
    """create | update."""
    from .. import manifest
    from ..manifest import statindex

    old = None
    if args.verb == "update":
        old = manifest.load(args.manifest)
        sel = manifest.selection_of(old)
        include = args.include or sel.include
        exclude = args.exclude or sel.exclude
    else:
        include, exclude = args.include or [], args.exclude or []
    selection = manifest.Selection(include, exclude)
    out = args.out if args.verb == "create" else args.manifest
    reuse = old["checksums"] if (old and not args.deep) else None
    output.progress(args, f"hashing {args.root}")
    data = manifest.build(args.root, selection, phase=args.phase, operation=args.verb,
                          jobs=args.jobs, reuse=reuse, skip=manifest.own_files(out))
    changes = manifest.diff(old["checksums"] if old else {}, data["checksums"])
    if not args.dry_run:
        manifest.write(out, data)
        try:  # a cache for verify --fast: its failure costs time, never the manifest
            statindex.write(out, data)
        except (OSError, ValueError, OverflowError, TypeError) as exc:
            # an older index left there is stale: bound to the old bytes, never used
            output.warn(f"stat index not written ({exc}); verify --fast reads the "
                        "manifest instead", prefix="strongroom: warning: ")
    meta = data["metadata"]
    if old:
        for key, mark in (("added", "+"), ("removed", "-"), ("changed", "~")):
            output.say(args, *[f"{mark} {rel}" for rel in changes[key]])
    verb = "would write" if args.dry_run else "wrote"
    message = (f"{verb} {out}: {meta['files']} files, {human_bytes(meta['bytes'])}"
               + (f"; {len(changes['added'])} added, {len(changes['removed'])} removed, "
                  f"{len(changes['changed'])} changed" if old else ""))
    output.say(args, message)
    return output.emit(args, OK, message, {"manifest": out, "files": meta["files"],
                                           "bytes": meta["bytes"],
                                           "written": not args.dry_run, **changes})


def add_parser(sub):
    _, mfsub = output.group(sub, "manifest", help="SHA-256 manifests of a tree: create, "
                                                  "verify, update, export")
    patterns_help = "gitignore-style pattern (repeatable)"
    for verb, helptext in (("create", "hash every covered file under ROOT into --out"),
                           ("update", "re-record the manifest after intentional changes")):
        m = output.verb(mfsub, verb, help=helptext)
        m.add_argument("root", metavar="ROOT")
        if verb == "create":
            m.add_argument("--out", required=True, help="manifest file to write (atomically; "
                           "the previous one is kept as FILE.prev)")
        else:
            m.add_argument("--manifest", required=True, help="the manifest to update")
            m.add_argument("--deep", action="store_true",
                           help="re-hash every file (default: files whose size, mtime or "
                                "inode are unchanged keep their recorded hash)")
        m.add_argument("--include", action="append", metavar="GLOB",
                       help=patterns_help + "; default every file")
        m.add_argument("--exclude", action="append", metavar="GLOB", help=patterns_help)
        m.add_argument("--phase", default="manual", help="recorded in metadata.phase")
        m.add_argument("--dry-run", action="store_true", help="report, write nothing")
        m.add_argument("--jobs", type=int, default=0, help="hashing threads (default: cores)")
        m.set_defaults(func=cmd_build)
    mv = output.verb(mfsub, "verify", help="check ROOT against a manifest",
                     epilog=output.epilog("2 on any mismatched, missing or unreadable file; "
                                          "1 when the manifest lists no file (nothing to "
                                          "verify)"))
    mv.add_argument("root", metavar="ROOT")
    mv.add_argument("--manifest", required=True)
    how = mv.add_mutually_exclusive_group()
    how.add_argument("--deep", action="store_true", help="re-hash every file (default)")
    how.add_argument("--fast", action="store_true",
                     help="re-hash only files whose size, mtime or inode changed")
    mv.add_argument("--jobs", type=int, default=0, help="hashing threads (default: cores)")
    mv.set_defaults(func=cmd_verify)
    me = output.verb(mfsub, "export", help="print the manifest in sha256sum -c --strict "
                                           "format")
    me.add_argument("--manifest", required=True)
    me.add_argument("--out", help="write here instead of standard output")
    me.set_defaults(func=cmd_export)

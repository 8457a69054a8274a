"""Human renderings shared by the CLI and the job runner."""

from ..core.formats import human_bytes, render


def sync_table(results, remote):
    rows = []
    for r in results:
        note = "; ".join(filter(None, [r.message, *r.notes]))
        crit = f"{r.critical_files} unencrypted" if r.critical_files else "-"
        rows.append([r.name, r.action, r.status,
                     human_bytes(r.bytes_written) if r.bytes_written else "-",
                     r.chain_length or "-", crit, r.remote or ("-" if not remote else ""),
                     note])
    if not rows:
        return ""
    return render(["REPOSITORY", "ACTION", "STATUS", "WRITTEN", "CHAIN", "CRITICAL",
                   "OFF-SITE", "NOTE"], rows)


def sync_summary(results, root, dry_run=False):
    if not results:
        return (f"No git repositories found under {root}: nothing to back up. Put (or clone) "
                f"your repositories in {root}, or set the job's options.root to the folder "
                "that holds them.")
    counts = {}
    for r in results:
        counts[r.action] = counts.get(r.action, 0) + 1
    parts = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    written = sum(r.bytes_written for r in results)
    line = f"{len(results)} repositories: {parts}."
    failed = [r.name for r in results if r.status == "error"]
    if not failed and not any(r.changed for r in results) and not dry_run:
        line += " Nothing changed: every repository is as last bundled."
    elif written:
        line += f" {human_bytes(written)} {'would be written' if dry_run else 'written'}."
    if failed:
        line += f" FAILED: {', '.join(failed)}."
    return line

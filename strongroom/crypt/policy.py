"""Which files a job with `encrypt_to` seals on their way off-site, and which stay plain.

A name is the file's path relative to what one upload sends (a snapshot folder, a day
folder, a bundle chain's folder, a single rollup or database version). A file that can
hold user content is sealed: it reaches the remote only as NAME.age, with a plain sidecar
NAME.age.json (its name and hashes). These stay plain, because they hold names, sizes,
hashes and times only, and a drill, a re-verification or a person must read them to find
and check the rest without the key:

  bundle-manifest.json   a bundle chain's manifest (file names, SHA-256s, commit ids)
  *.refs.json            a bundle's ref manifest (ref names and commit ids)
  SHA256SUMS             a snapshot's checksums (relative paths and SHA-256s)
  REPORT.json            a snapshot's counts, sizes, durations and database names
  MANIFEST.txt           a snapshot's host, user, source path and tool versions
  LARGE_FILES.txt        a snapshot's list of large files (sizes and paths)
  manifest.json          a day folder's manifest (relative paths, sizes, SHA-256s)
  *.metadata.json        a database version's metadata (hashes, size, table names)

Only a file at the top of what is sent counts as one of these: a user's own
`manifest.json` or `SHA256SUMS` inside a day folder's source, or among a snapshot's
critical files, is content and is sealed. Everything else is sealed: git bundles,
critical-files packs, snapshot archives, critical/ and db/ files, the files of a day
folder, rollup archives and database copies (a file already called NAME.age too: its
name says nothing of what it holds).
"""

PLAIN_NAMES = frozenset({"bundle-manifest.json", "SHA256SUMS", "REPORT.json", "MANIFEST.txt",
                         "LARGE_FILES.txt", "manifest.json"})
PLAIN_SUFFIXES = (".refs.json", ".metadata.json")


def sealed(relname):
    """Is the file `relname` (relative to what one upload sends) sent as an age file?"""
    name = str(relname).replace("\\", "/").lstrip("/")
    if "/" in name:  # below the top: content, whatever it is called
        return True
    return not (name in PLAIN_NAMES or name.endswith(PLAIN_SUFFIXES))

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The library/ modules import their shared code by its collection name
# (ansible_collections.strongroom.backup.plugins.module_utils.*), as Ansible runs them from
# the checkout or from the installed collection: the checkout's collections/ has it.
if str(ROOT / "collections") not in sys.path:
    sys.path.insert(0, str(ROOT / "collections"))

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The Ansible modules live in library/ (not a package) and are imported by file name.
sys.path.insert(0, str(ROOT / "library"))

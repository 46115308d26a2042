"""Make the handout's modules (net/, pruning.py, util.py) importable, wherever pytest is started from."""
import sys
from pathlib import Path

HANDOUT = Path(__file__).resolve().parent.parent
if str(HANDOUT) not in sys.path:
    sys.path.insert(0, str(HANDOUT))

"""Hidden test suites that grade the code of a student submission.

One pytest module per part of the homework (``test_prune.py`` and
``test_retrain.py`` for "prune", ``test_quantize.py``, ``test_huffman.py``).
Every test carries a ``points`` marker (its score and the TODO it checks);
the module's ``part`` marker says which part of the grade it counts for.
``runner.py`` runs them against one submission; see docs/GRADING-SUITES.md.
"""
from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent
REPO = SUITES_DIR.parent.parent

VISIBILITIES = ("visible", "hidden", "after_published")
DEFAULT_VISIBILITY = "after_published"

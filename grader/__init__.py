"""TA tools for the Deep Compression homework: ``python -m grader <verb>``."""

"""The student's side of the box: runs student code on request and answers with data only (see serve.py)."""

"""Day one on a student laptop: the untouched skeleton's heavy steps on the dense (unpruned) AlexNet.

    python benchmarks/day_one.py [--handout assignment] [--skip-kmeans] [--skip-huffman]

Each measurement runs in a fresh subprocess started from the handout folder
(``assignment/`` by default, ``solutions/`` for the reference), so the figures
are those of one script run:

* Huffman: ``huffman_encode_model`` then ``huffman_decode_model`` of a fresh,
  dense ``AlexNet()`` (as ``huffman_encode.py`` does, in one process, freeing
  the encoded model before decoding): the
  seconds and the peak resident memory (``ru_maxrss``), next to the memory
  the process held before coding (Python, torch and the model), since
  torch alone takes a few hundred MB;
* k-means: ``apply_weight_sharing(model, 5)`` of a fresh dense ``AlexNet()``
  (what ``weight_share.py`` does to the skeleton's unpruned model): seconds.

Goals (issue "day one is light"): peak under 1 GB, k-means within 2 minutes
on 2 cores. Not a test: it prints the figures.
"""
import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

HUFFMAN = """
import contextlib, hashlib, io, json, resource, tempfile, time
import torch
from net.models import AlexNet
from net.huffmancoding import huffman_decode_model, huffman_encode_model
def digest(model):
    return hashlib.sha256(b"".join(t.numpy().tobytes() for t in model.state_dict().values())).hexdigest()
torch.manual_seed(0)
model = AlexNet()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with tempfile.TemporaryDirectory() as folder:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        report = huffman_encode_model(model, folder)
    encoded = time.perf_counter()
    original = digest(model)
    del model  # as huffman_encode.py does before decoding into a fresh model
    fresh = huffman_decode_model(AlexNet(), folder)
    done = time.perf_counter()
print(json.dumps({"before_mb": before, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "encode_s": encoded - start, "decode_s": done - encoded, "identical": digest(fresh) == original,
                  "rate": report.rate}))
"""

KMEANS = """
import json, time, contextlib, io
import torch
from net.models import AlexNet
from net.quantization import apply_weight_sharing
torch.manual_seed(0)
model = AlexNet()
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    apply_weight_sharing(model, bits=5)
seconds = time.perf_counter() - start
fc = {name: int(m.weight.unique().numel()) for name, m in model.named_children() if name.startswith("fc")}
print(json.dumps({"seconds": seconds, "distinct_fc_values": fc}))
"""


def run(code: str, handout: Path) -> dict:
    """Run ``code`` in a fresh Python inside ``handout``; return the JSON it prints last."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=handout, capture_output=True,
                            text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"the measurement failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handout", type=Path, default=REPO / "assignment",
                        help="folder holding net/ (assignment/ or solutions/)")
    parser.add_argument("--skip-huffman", action="store_true")
    parser.add_argument("--skip-kmeans", action="store_true")
    args = parser.parse_args()
    if not (args.handout / "net" / "models.py").is_file():
        raise SystemExit(f"{args.handout} holds no net/models.py")
    print(f"handout: {args.handout}")
    if not args.skip_huffman:
        h = run(HUFFMAN, args.handout)
        print(f"Huffman round trip of the dense AlexNet: encode {h['encode_s']:.1f} s, decode {h['decode_s']:.1f} s, "
              f"peak RSS {h['peak_mb']:.0f} MB (of which {h['before_mb']:.0f} MB before coding: Python, torch and "
              f"the AlexNet); decoded identical: {h['identical']}; file compression rate {h['rate']:.2f}x")
    if not args.skip_kmeans:
        k = run(KMEANS, args.handout)
        print(f"5-bit weight sharing of the dense AlexNet: {k['seconds']:.1f} s; "
              f"distinct fc values after: {k['distinct_fc_values']}")


if __name__ == "__main__":
    main()

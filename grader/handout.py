"""The students' README (``assignment/README.md``), written from the homework's facts.

``python -m grader assign`` puts it into ``assignment/`` with the generated
code, so the TODO table, the points, the gate and the files to hand in can
never disagree with what the grader does: they come from
``grader/homework.py`` and the reference model. The prose is ours; the
figures are the homework's.
"""
from grader import homework

PAPER = ("Song Han, Huizi Mao and William J. Dally, *Deep Compression: Compressing Deep Neural Networks with "
         "Pruning, Trained Quantization and Huffman Coding*, ICLR 2016, https://arxiv.org/abs/1510.00149")
CIFAR10 = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _todo_table() -> str:
    rows = ["| part | points | TODOs (file: function) |", "| --- | --- | --- |"]
    for part in homework.PARTS:
        rows.append(f"| {part.name}: {part.summary} | {part.points:g} | "
                    + "<br>".join(f"`{todo}`" for todo in part.todos) + " |")
    top, middle, bottom = homework.RANKING_POINTS
    rows.append(f"| {homework.RANKING_NAME}: your `<id>{homework.MODEL_SUFFIX}` | {top} | "
                f"compression rate among the models above the {float(homework.GATE):g}% gate |")
    return "\n".join(rows)


def _ranking(original_bytes: int) -> str:
    top, middle, bottom = homework.RANKING_POINTS
    return f"""\
Your `<id>{homework.MODEL_SUFFIX}` is measured by the grader's own copy of the
handout, never by your code:

1. It is loaded without running anything from it: exactly the
   {2 * len(homework.LAYERS)} float32 tensors of the model (weight and bias of
   {", ".join(homework.LAYERS)}), finite, of the right shapes. A model saved by
   the handout's scripts (`torch.save(model, ...)`) or its `state_dict` both work.
2. It is encoded with the *reference* Huffman encoder (the solution of
   `net/huffmancoding.py`, not yours) and decoded back; the decoded model must
   equal yours bit for bit. The compressed size is every byte of the encoded
   files plus 4 bytes per bias value; the **compression rate** is
   {original_bytes:,} bytes (the model in float32) over that size.
3. Its accuracy is measured on the CPU on all {homework.TEST_IMAGES:,} CIFAR-10
   test images, with the normalisation of `util.py`. A model is ranked only
   if its accuracy is **strictly above {float(homework.GATE):g}%**.
4. Ranked models are sorted by compression rate; equal rates share a rank.
   With *n* ranked models, rank *r* earns {top} points if *r* ≤ ⌈n/3⌉,
   {middle} if *r* ≤ ⌈2n/3⌉, else {bottom}. A model below the gate, or one
   that cannot be loaded, earns 0.

`python check_submission.py <id>` runs the same loading rules, measures
the rate with your encoder and compares the accuracy your last run logged
(or, with `--evaluate`, measures it) with the gate; it says "Ready" only when
the ranking would accept the model."""


IDEAS = """\
Deep Compression shrinks a trained network in three steps that each cost
little accuracy and add up to a large saving ([the paper]({paper_url})):

**Pruning and retraining.** Most weights of a trained network are small,
and setting them to zero changes the outputs only a little. Removing many
at once hurts, but the remaining weights can learn to make up for the
missing ones: training again with the pruned weights held at zero (their
gradients and updates masked) brings most of the accuracy back. That is why
`pruning.py` prunes, then retrains. A pruned layer is stored sparsely: only
the non-zero values and where they are.

**Weight sharing (k-means).** The surviving weights of a layer are
clustered into 2^bits groups and each weight is replaced by its group's
centre. The layer then holds only 2^bits distinct values, so each weight
can be stored as a short index into a table of centres. The trade: fewer
bits per weight for a small error in each weight; the paper retrains the
centres afterwards, this homework does not.

**Huffman coding.** The indices and the gaps between non-zero positions
are far from uniform: some values are much more frequent than others.
A Huffman code gives frequent values short codes and rare ones long codes,
so the same information takes fewer bits, with no loss at all.

Two figures called "compression" appear while you work. `print_nonzeros`
reports how many weights are left (the **share of non-zero weights**, and
what that saving alone would give); `huffman_encode.py` reports the
**compression rate** of the encoded files, which is what the ranking
uses. They are different numbers for the same model."""


def readme(original_bytes: int) -> str:
    """The students' README for a homework whose model is ``original_bytes`` in float32."""
    handed_in = ", ".join(f"`{f}`" for f in homework.STUDENT_FILES)
    provided = ", ".join(f"`{f}`" for f in homework.PROVIDED_FILES)
    scripts = "\n".join(f"python {script} --data-dir DATA" for script in homework.SCRIPTS)
    return f"""\
# {homework.TITLE}

This folder is your homework. You compress an AlexNet trained on CIFAR-10
the way Deep Compression does: prune it and retrain it, share its weights
with k-means, and Huffman-code what is left. The code is complete except
for the TODOs below; the untouched folder already runs end to end (nothing
gets pruned or compressed until you fill them in).

## The ideas

{IDEAS.format(paper_url=PAPER.rsplit(" ", 1)[1])}

Reference: {PAPER}.

## What you write, and the points

{_todo_table()}

Every TODO says in its comment what to write and what not to touch.
Only the files {handed_in} are graded: the grader uses its own copies of
{provided}, so changing those has no effect on your grade. `homework.py`
holds the homework's facts (the gate, the points, the files graded).

## Running it

```bash
{scripts}
python -m pytest tests       # a few visible checks (the graded tests are more and hidden)
python check_submission.py <id>
```

Each script takes `--help`. `--subset N` runs on N images for a quick try;
`--device` picks cuda, mps or cpu (auto by default).

**CIFAR-10.** The scripts read the official "python version" of CIFAR-10
({CIFAR10}): the folder `DATA/cifar-10-batches-py/`. When it is missing and
you are online, torchvision downloads it into `DATA`.

## What to hand in

1. `<id>.rar` (or `.zip`, `.tar.gz`, `.7z`) holding `net/` and
   `pruning.py` (`check_submission.py` packs it for you). `pruning.py` is
   part of it because two TODOs of the pruning part live there; a missing
   file costs exactly the tests of its TODOs, nothing else.
2. `<id>{homework.MODEL_SUFFIX}`: your final model (after weight sharing), for
   the ranking.
3. Optionally `<id>{homework.ONNX_SUFFIX}`: a deployable model (one self-contained ONNX
   file, such as Part 2's INT8 export) for a second board, without points: models above
   {float(homework.ONNX_GATE):g}% are ranked by bit-operations of one image (MACs x weight
   bits x activation bits, read from the graph). Only the standard operators of
   `homework.ONNX_OPS` are accepted, with one `[batch, 3, 32, 32]` float input and
   `[batch, 10]` logits.

Your id is your file name without its suffix; characters other than
letters, digits and `_ . @ + -` become `_`.

## How the ranking measures your model

{_ranking(original_bytes)}

## What differs from the original slides

- Pruning by percentile follows the slides: `q` is the percentage of
  weights **kept** in each layer (the threshold is the (100 − q)th
  percentile of |W|); a per-layer mapping of rates is also accepted.
- `pruning.py` must keep the pruned weights at exactly zero during
  retraining in two places (gradients and, after each step, the weights),
  because momentum and weight decay would otherwise revive them.
- The conv layers' Huffman format is fixed (one sparse matrix per kernel
  slice, three coded streams), so the grader can decode your files.
- AlexNet is adapted to 32×32 images and initialised for ReLU; the
  handout pins its own library versions.
"""

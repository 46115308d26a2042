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


def _deploy_table() -> str:
    rows = ["| part | points | TODOs (file: function) |", "| --- | --- | --- |"]
    rows += [f"| {part.name}: {part.summary} | {part.points:g} | " + "<br>".join(f"`{todo}`" for todo in part.todos)
             + " |" for part in homework.DEPLOY_PARTS]
    return "\n".join(rows)


def _deploy_counts() -> str:
    """How Part 2's points count, from ``homework.DEPLOY_SCORING``."""
    if homework.DEPLOY_SCORING == "bonus":
        return (f"Its {homework.DEPLOY_POINTS:g} points are a **bonus** on top of Part 1's "
                f"{homework.TOTAL_POINTS:g}.")
    return (f"It is graded **separately**: its own total of {homework.DEPLOY_POINTS:g} points, beside Part 1's "
            f"{homework.TOTAL_POINTS:g}.")


def _deploy() -> str:
    folder = homework.DEPLOY_NAME
    handed_in = ", ".join(f"`{f}`" for f in homework.DEPLOY_STUDENT_FILES)
    provided = ", ".join(f"`{f}`" for f in homework.DEPLOY_PROVIDED_FILES)
    return f"""\
Part 1's model is far smaller on disk, but it runs no faster: its tensors
are still dense float32, zeros included. Part 2, in `{folder}/`, makes it fast
on a CPU: remove whole channels so the layers really shrink, factorise
layers with a truncated SVD, win accuracy back with knowledge distillation,
run in INT8 with PyTorch (calibrated, dynamic, and trained with the rounding
simulated: quantisation-aware training), capture the model as one graph with
`torch.export` and check it computes exactly the same, and export to ONNX
and run it in INT8 with ONNX Runtime. Last, an optimiser measures what each
step and number format gives on *your* machine and picks a plan for a target
(speed, size, accuracy or balanced) under your constraints; you write its
decision. {_deploy_counts()}

{_deploy_table()}

**Running it.** Part 2 needs `onnx`, `onnxruntime` and `onnxscript` on top
of Part 1's libraries (`pip install onnx onnxruntime onnxscript`). From this
folder:

```bash
python -m {folder}.pipeline --data-dir DATA --model saves/model_after_retraining.ptmodel
```

runs every step on your Part 1 model (without `--model`, on an untrained
AlexNet, which only shows that the steps run) and prints, for each variant,
its test accuracy, parameters and the exact bytes of the file it writes to
`saves/{folder}/`; the ONNX models also get their top-1 agreement and largest
logit difference against PyTorch, and the captured graph whether it equals
the model exactly on the test images. A step whose TODO is not written yet is
skipped with a note that names it; the others still run. `--help` lists the
flags (`--keep-channels`, `--energy`, `--distill-epochs`, `--qat-epochs`, `--backend`...).
Then

```bash
python -m {folder}.optimiser --data-dir DATA --model saves/model_after_retraining.ptmodel --target speed --max-drop 3
```

measures every number format this machine runs (stage 1), builds the
structural plans of `--structures` and measures them in the formats that
helped (stage 2), and writes every candidate, the Pareto fronts, the chosen
plan and why to `saves/{folder}/optimiser/` (JSON, Markdown and a plot).

**What is graded.** Hidden tests call each of your functions on small
models and compare what it returns with the grader's own computation: the
channels kept and the shapes of every repaired layer, unchanged outputs
after removing channels that were all zero, the schedules at fixed steps,
the SVD's error against the best possible of that rank, the distillation
loss on known logits, the INT8 model's weights and scales, the weights
after a pass of quantisation-aware training and the logits of the INT8 model
made from it, the logits of your captured graph at another batch size (bit
for bit) and your check's verdict on a graph changed by 2e-5, the ONNX
operators (QuantizeLinear/DequantizeLinear, one scale per output channel)
the agreement figures, and the optimiser's choice on made-up measured rows
whose right answer follows from its docstrings. No test measures speed, and the pipeline's
numbers are yours to study: they are not graded. Only {handed_in} are
graded; the grader uses its own {provided}."""


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

## Part 2: make it fast (`{homework.DEPLOY_NAME}/`)

{_deploy()}

## What to hand in

1. `<id>.rar` (or `.zip`, `.tar.gz`, `.7z`) holding `net/`, `pruning.py`
   and, for Part 2, `{homework.DEPLOY_NAME}/` (`check_submission.py` packs it for you
   and names any Part 2 TODO still unwritten). `pruning.py` is part of it
   because two TODOs of the pruning part live there; a missing file costs
   exactly the tests of its TODOs, nothing else. Without `{homework.DEPLOY_NAME}/`,
   Part 2's tests score 0 and your feedback says what to add.
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
""" + mcu_section()


# ============================================================================ the microcontroller track (begin)
# Its own section of the README, written from homework.MCU_*; readme() only appends it.


def mcu_section() -> str:
    """The README's section on the microcontroller track: what it is, its TODOs and points, how to run it,
    what is graded."""
    uno = homework.MCU_BOARDS["uno"]
    rows = "\n".join(f"| {part.name}: {part.summary} | {part.points:g} | "
                     + "<br>".join(f"`{todo}`" for todo in part.todos) + " |" for part in homework.MCU_PARTS)
    boards = ", ".join(f"`{name}` ({board.chip})" for name, board in homework.MCU_BOARDS.items())
    handed_in = ", ".join(f"`{f}`" for f in homework.MCU_STUDENT_FILES)
    provided = ", ".join(f"`{f}`" for f in homework.MCU_PROVIDED_FILES)
    side = homework.MCU_RESOLUTION
    return f"""
## The microcontroller track (`mcu/`): 1-bit weights on an Arduino UNO

A separate assignment of {homework.MCU_POINTS:g} points (its own total, not part
of the points above). AlexNet cannot fit a microcontroller, so this track
trains a small binary network on CIFAR-10 downsampled to {side}×{side} and makes
it fit an Arduino UNO ({uno.chip}: {uno.flash_bytes:,} bytes of flash,
{uno.sram_bytes:,} bytes of SRAM). Every weight is +1 or −1 times one scale per
output channel, so it takes one bit and a multiply is an add or a subtract.
The boards are data in `homework.py` (`MCU_BOARDS`): {boards}.

| part | points | TODOs (file: function) |
| --- | --- | --- |
{rows}

```bash
python mcu_train.py --data-dir DATA --float-reference   # --board, --channels, --subset N: see --help
```

trains the binary network (and, with `--float-reference`, the same shape with
float weights), prunes channels until the budget estimate fits the board,
exports `saves/mcu/mcu_model.h` with plain C99 inference (`mcu/infer.c`),
compiles it with `gcc` and checks that it predicts exactly what Python
predicts, and, where `avr-gcc`, `avr-size` and `simavr` are installed
(Debian: `gcc-avr avr-libc binutils-avr simavr`), measures the real flash,
RAM and cycles of an ATmega328P. Only those measurements say "fits".

**What is graded:** {handed_in} (hand them in inside a folder `mcu/`). The
grader uses its own copies of {provided}. Each TODO is called on small fixed
inputs and compared with its definition (the values, the gradients, the
bytes and bits, the budget in bytes and seconds, the channels pruning
removes, in order); one test exports a small network with your `pack_signs`
and compiles the header with `gcc`: it must give the reference's logits
exactly. `fit_to_budget` is graded with your own budget functions, so make
those right first. Training, accuracy and the AVR measurement are not
graded.
"""
# ============================================================================ the microcontroller track (end)

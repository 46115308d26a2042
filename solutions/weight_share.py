"""Step 2 of Deep Compression: share weights with k-means.

    python weight_share.py [--bits 5]

Reads saves/model_after_retraining.ptmodel, writes saves/model_after_weight_sharing.ptmodel.
"""
from pathlib import Path

import torch

import util
from net.quantization import apply_weight_sharing


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--bits", type=int, default=5, help="each layer keeps at most 2**bits distinct non-zero values")
    args = parser.parse_args()
    if not 1 <= args.bits <= 16:
        raise ValueError(f"--bits must be between 1 and 16, got {args.bits}")

    device = util.select_device(args.device)
    util.set_seed(args.seed)
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    model = util.load_model(str(Path(args.saves_dir) / "model_after_retraining.ptmodel")).to(device)
    print("--- Accuracy before weight sharing ---")
    util.test(model, test_set, device)

    apply_weight_sharing(model, bits=args.bits)
    print(f"--- Accuracy after weight sharing ({args.bits} bits) ---")
    accuracy = util.test(model, test_set, device)
    util.log(args.log, f"accuracy_after_weight_sharing {accuracy:.2f}")
    torch.save(model, Path(args.saves_dir) / "model_after_weight_sharing.ptmodel")


if __name__ == "__main__":
    util.run_main(main)

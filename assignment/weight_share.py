"""Step 2 of Deep Compression: share weights with k-means.

    python weight_share.py                       # 5 bits (32 shared values) in every layer
    python weight_share.py --bits conv1=8,conv2=8,conv3=8,conv4=8,conv5=8,fc1=5,fc2=5,fc3=5

Reads saves/model_after_retraining.ptmodel, writes saves/model_after_weight_sharing.ptmodel.
"""
from pathlib import Path
from typing import Dict

import torch
import torch.nn as nn

import util
from homework import LAYERS
from net.quantization import apply_weight_sharing


def parse_bits(text: str) -> Dict[str, int]:
    """``"5"`` -> 5 bits in every layer; ``"conv1=8,fc1=5"`` -> those layers only. ValueError when it is bad."""
    bits = util.per_layer("--bits", text, int, "a number of bits such as 5, or layer=bits pairs such as "
                                               "conv1=8,fc1=5")
    bits = bits if isinstance(bits, dict) else dict.fromkeys(LAYERS, bits)
    unknown = sorted(set(bits) - set(LAYERS))
    if unknown:
        raise ValueError(f"--bits: unknown layer(s) {unknown}; the layers are {list(LAYERS)}")
    for name, width in bits.items():
        if not 1 <= width <= 16:
            raise ValueError(f"--bits: {name} has {width} bits; use 1 to 16")
    return bits


def warn_if_not_shared(model: nn.Module, bits: Dict[str, int]) -> None:
    """Say so loudly when a layer still holds more distinct non-zero values than its bits allow."""
    for name, module in model.named_children():
        if name in bits:
            weight = module.weight.data
            distinct = int(weight[weight != 0].unique().numel())
            if distinct > 2 ** bits[name]:
                print(f"WARNING: {name} still holds {distinct:,} distinct non-zero values, more than "
                      f"2**{bits[name]}: is apply_weight_sharing's TODO in net/quantization.py done?")


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--bits", default="5", help="each layer keeps at most 2**bits distinct non-zero values: "
                                                    "one number for every layer, or layer=bits pairs (the layers "
                                                    "not named are left unshared)")
    args = parser.parse_args()
    bits = parse_bits(args.bits)

    device = util.select_device(args.device)
    util.set_seed(args.seed)
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    model = util.load_model(str(Path(args.saves_dir) / "model_after_retraining.ptmodel")).to(device)
    print("--- Accuracy before weight sharing ---")
    util.test(model, test_set, device)

    for name, width in bits.items():
        layer = getattr(model, name)
        print(f"sharing {name}: {int(torch.count_nonzero(layer.weight)):,} non-zero weights, "
              f"at most {2 ** width} values", flush=True)
        apply_weight_sharing(model, {name: width})
    warn_if_not_shared(model, bits)
    print(f"--- Accuracy after weight sharing ({args.bits} bits) ---")
    accuracy = util.test(model, test_set, device)
    util.log_accuracy(args.log, "accuracy_after_weight_sharing", accuracy, len(test_set))
    torch.save(model, Path(args.saves_dir) / "model_after_weight_sharing.ptmodel")


if __name__ == "__main__":
    util.run_main(main)

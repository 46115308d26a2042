"""Step 3 of Deep Compression: Huffman code the shared model, decode it and test the result.

    python huffman_encode.py

Reads saves/model_after_weight_sharing.ptmodel, writes encodings/, prints the
compression table and the accuracy of the model decoded from encodings/.
"""
import util
from net.huffmancoding import huffman_decode_model, huffman_encode_model
from net.models import AlexNet


def main() -> None:
    parser = util.common_arguments(__doc__.splitlines()[0])
    parser.add_argument("--encodings-dir", default="encodings", help="folder the encoded model is written to")
    args = parser.parse_args()

    device = util.select_device(args.device)
    util.set_seed(args.seed)
    test_set = util.load_cifar10(args.data_dir, train=False).subset(args.subset)
    model = util.load_model(f"{args.saves_dir}/model_after_weight_sharing.ptmodel")

    report = huffman_encode_model(model, args.encodings_dir)
    del model  # what is tested below comes from encodings/ alone (and the memory goes back for decoding)
    util.log(args.log, f"compression {report.original_bytes} original bytes, "
                       f"{report.compressed_bytes} compressed bytes, {report.rate:.2f}x")

    decoded = huffman_decode_model(AlexNet(), args.encodings_dir).to(device)
    print("--- Accuracy of the model decoded from the encodings ---")
    accuracy = util.test(decoded, test_set, device)
    util.log_accuracy(args.log, "accuracy_after_huffman", accuracy, len(test_set))


if __name__ == "__main__":
    util.run_main(main)

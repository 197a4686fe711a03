"""Fresh phantom patients through a built model folder: does the report state the one drawn finding, on its side?

    python benchmarks/fresh_phantoms.py [--model ~/.cache/saerad/demo-v3/model] [--n 24]

Per case, `--n` phantoms of new patients (seeds outside every IU-phantom split and the pretraining stream) with that
one finding drawn, and normal ones; each through `model.generate`, its FINDINGS read by the labeler. For a
lateralised finding, "on the drawn side" counts mentions with that side (PA view: the patient's left is on the image's
right). For normal patients, "report states any finding" is the false-alarm rate.
"""


from saerad.evaluation.fresh import fresh_phantom_rows, markdown
from saerad.generate import load_model

from demo_model import model_parser, parse_model_args


def main() -> None:
    parser = model_parser(__doc__)
    parser.add_argument("--n", type=int, default=24, help="patients per case")
    args = parse_model_args(parser)
    model, processor = load_model(args.model)
    print(f"model {args.model}, {args.n} fresh patients per case\n")
    print(markdown(fresh_phantom_rows(model, processor, n=args.n)), end="")


if __name__ == "__main__":
    main()

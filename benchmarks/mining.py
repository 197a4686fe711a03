"""Exemplar mining cost relative to the SAE encode it streams over (aim: <= 1.5).

    python benchmarks/mining.py [--n 50000] [--d-in 768] [--d-sae 8192] [--k 32]

Both sides run in this process on the same random SAE and embeddings; the ratio is what to quote.
"""

import argparse
import time

import torch

from modeling_saerad import SparseAutoencoder
from saerad.interpret.mine import mine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--d-in", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=8192)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    sae = SparseAutoencoder(args.d_in, args.d_sae, architecture="topk", k=32).eval()
    torch.nn.init.normal_(sae.W_enc, std=args.d_in**-0.5)
    x = torch.randn(args.n, args.d_in)

    @torch.no_grad()
    def encode_only():
        for s in range(0, args.n, args.batch_size):
            sae.encode(x[s : s + args.batch_size])

    def best(fn):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    encode_s = best(encode_only)
    mine_s = best(lambda: mine(sae, x, k=args.k, batch_size=args.batch_size))
    print(f"n={args.n} d_in={args.d_in} d_sae={args.d_sae} k={args.k}: encode {encode_s:.2f} s, "
          f"mine {mine_s:.2f} s, ratio mine/encode = {mine_s / encode_s:.2f}")


if __name__ == "__main__":
    main()

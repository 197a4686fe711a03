"""The Space under load: concurrent /report requests on loopback, all answered and checked, none refused.

    python benchmarks/space_load.py [--model ~/.cache/saerad/demo-v3/model] [--requests 32] [--concurrency 2]

Starts spaces/app.py in a subprocess (as the Hub runs it), fires `--requests` /report calls at once from as many
gradio_client threads, and prints how many were answered with the report `model.generate` writes for the same
image, how many failed, p50/p95 latency and the server's peak resident memory (sampled every 50 ms)."""

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from demo_model import model_parser, parse_model_args

SPACE = Path(__file__).resolve().parents[1] / "spaces"


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, in MB (Linux /proc)."""
    total = 0
    for p in [pid] + [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def main() -> None:

    parser = model_parser(__doc__)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=2, help="the Space's SAERAD_CONCURRENCY")
    args = parse_model_args(parser)
    from gradio_client import Client, handle_file
    from PIL import Image
    from transformers import AutoImageProcessor, AutoModel

    from saerad.data.phantom import render
    from saerad.evaluation.fresh import fresh_seed

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "SAERAD_MODEL": args.model, "SAERAD_CONCURRENCY": str(args.concurrency),
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1"], cwd=SPACE,
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak, stop = [0.0], threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], rss_mb(server.pid))
            except (FileNotFoundError, ProcessLookupError):
                pass
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    try:
        client = None
        while client is None:
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            except Exception:
                if server.poll() is not None:
                    sys.exit("the Space did not start")
                time.sleep(1)
        idle = peak[0]
        folder = Path(tempfile.mkdtemp())
        paths = []
        for i in range(args.requests):
            image = render([{"label": "pleural_effusion", "laterality": "left" if i % 2 else "right"}],
                           seed=fresh_seed("space-load", i))
            paths.append(folder / f"cxr-{i}.png")
            image.save(paths[-1])
        model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(args.model, trust_remote_code=True)
        expected = [model.generate(processor(images=Image.open(p).convert("L"), return_tensors="pt")["pixel_values"])[0]
                    for p in paths]

        def call(i: int):
            start = time.perf_counter()
            try:
                own = Client(f"http://127.0.0.1:{port}/", verbose=False)
                text, _ = own.predict(handle_file(str(paths[i])), api_name="/report")
                return text == expected[i], time.perf_counter() - start, None
            except Exception as err:
                return False, time.perf_counter() - start, str(err).splitlines()[0][:120]

        with ThreadPoolExecutor(args.requests) as pool:
            results = list(pool.map(call, range(args.requests)))
    finally:
        stop.set()
        server.terminate()
        server.wait(30)
    latencies = sorted(r[1] for r in results)
    errors = [r[2] for r in results if r[2]]
    print(f"model {args.model}, {args.requests} concurrent /report requests, concurrency {args.concurrency}\n")
    print("| answered correctly | wrong | refused or failed | p50 s | p95 s | server RSS idle MB | peak MB |")
    print("|---|---|---|---|---|---|---|")
    p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
    print(f"| {sum(r[0] for r in results)} | {sum(not r[0] and not r[2] for r in results)} | {len(errors)} | "
          f"{statistics.median(latencies):.2f} | {p95:.2f} | {idle:.0f} | {peak[0]:.0f} |")
    for e in sorted(set(errors)):
        print(f"error: {e}")


if __name__ == "__main__":
    main()

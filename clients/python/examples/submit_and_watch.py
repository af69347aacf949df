#!/usr/bin/env python3
"""Submit a gantry training job from Python and follow it to the end, with gantry_client.

Install the client first (deploy/bootstrap.sh installs it into .venv):

    pip install ./clients/python

then:

    .venv/bin/python clients/python/examples/submit_and_watch.py \\
        --coordinator 127.0.0.1:50051 --token-file job.token \\
        --data /data/celeba64 --output s3://bucket/runs/blond --steps 2000

Prints the job id, then one line per state change, step and checkpoint; exits 0 when the job
SUCCEEDED, 1 when it ended otherwise, and 2 when a call fails (the coordinator refuses the job or
the token, or cannot be reached).
"""

import argparse
import os
import sys

import gantry_client


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coordinator", default=os.environ.get("GANTRY_COORDINATOR", "127.0.0.1:50051"))
    p.add_argument("--token-file", help="file holding the job API token (default: $GANTRY_TOKEN)")
    p.add_argument("--tls-ca", help="CA certificate (PEM) of the coordinator, for https (default: $GANTRY_TLS_CA)")
    p.add_argument("--data", required=True, help="dataset URL (a dataprep pack output)")
    p.add_argument("--output", required=True, help="output URL for checkpoints, samples and metrics")
    p.add_argument("--condition", default="Blond_Hair")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--name", default="python-client")
    args = p.parse_args()

    spec = {
        "data": {"url": args.data, "condition": args.condition},
        "model": {"image_size": args.image_size, "width": args.width},
        "train": {
            "batch_size": args.batch_size,
            "steps": args.steps,
            "checkpoint_every": args.checkpoint_every,
            "sample_every": args.sample_every,
            "device": args.device,
            "threads": args.threads,
        },
        "output": {"url": args.output},
        "job": {"name": args.name, "workers": args.workers},
    }
    try:
        with gantry_client.Client(args.coordinator, tls_ca=args.tls_ca, token_file=args.token_file) as client:
            job = client.submit(spec)
            print(job.id, flush=True)
            for event in client.watch(job.id):
                if isinstance(event, gantry_client.JobUpdate) and event.changed:
                    print(f"{event.job.id} {event.state}: {event.reason}", flush=True)
                elif isinstance(event, gantry_client.Step):
                    print(f"step {event.step} c_loss {event.c_loss:.4f} g_loss {event.g_loss:.4f}", flush=True)
                elif isinstance(event, gantry_client.Checkpoint):
                    print(f"checkpoint step {event.step} {event.url}", flush=True)
                elif isinstance(event, gantry_client.End):
                    return 0 if event.succeeded else 1
    except gantry_client.GantryError as error:
        print(error, file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())

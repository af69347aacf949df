#!/usr/bin/env python3
"""Submit a gantry training job from Python and follow it to the end.

The client code is generated from proto/gantry/v1/gantry.proto with grpcio-tools when the script
starts (into a temporary folder), so it always matches the contract in the repository:

    .venv/bin/python coordinator/python/submit_and_watch.py \
        --coordinator 127.0.0.1:50051 --token-file job.token \
        --data /data/celeba64 --output s3://bucket/runs/blond --steps 2000

Prints the job id, then one line per state change, step and checkpoint; exits 0 when the job
SUCCEEDED and 1 otherwise (2 when the coordinator refuses the call).
"""

import argparse
import os
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "proto"


def load_stubs(out):
    """Generates the gantry.v1 messages and stubs into `out` and imports them."""
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_ROOT / "gantry" / "v1" / "gantry.proto"),
        ]
    )
    if status != 0:
        sys.exit(f"protoc failed on {PROTO_ROOT}/gantry/v1/gantry.proto")
    sys.path.insert(0, out)
    from gantry.v1 import gantry_pb2, gantry_pb2_grpc

    return gantry_pb2, gantry_pb2_grpc


def read_token(path):
    text = pathlib.Path(path).read_text() if path else os.environ.get("GANTRY_TOKEN", "")
    token = text.strip()
    if not token:
        sys.exit("no job token: pass --token-file or set GANTRY_TOKEN")
    return token


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coordinator", default=os.environ.get("GANTRY_COORDINATOR", "127.0.0.1:50051"))
    p.add_argument("--token-file")
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

    with tempfile.TemporaryDirectory() as generated:
        pb, rpc = load_stubs(generated)
        spec = pb.JobSpec(
            data=pb.DataSpec(url=args.data, condition=args.condition),
            model=pb.ModelSpec(image_size=args.image_size, width=args.width),
            train=pb.TrainSpec(
                batch_size=args.batch_size,
                steps=args.steps,
                checkpoint_every=args.checkpoint_every,
                sample_every=args.sample_every,
                device=args.device,
                threads=args.threads,
            ),
            output=pb.OutputSpec(url=args.output),
            job=pb.ScheduleSpec(name=args.name, workers=args.workers),
        )
        auth = [("authorization", f"Bearer {read_token(args.token_file)}")]
        target = args.coordinator.split("://", 1)[-1]
        with grpc.insecure_channel(target) as channel:
            jobs = rpc.JobServiceStub(channel)
            try:
                job = jobs.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=auth).job
            except grpc.RpcError as e:
                print(f"submit: {e.code().name}: {e.details()}", file=sys.stderr)
                return 2
            print(job.id, flush=True)
            state = None
            for event in jobs.WatchJob(pb.WatchJobRequest(id=job.id), metadata=auth):
                kind = event.WhichOneof("event")
                if kind == "job":
                    state = event.job.state
                    name = pb.JobState.Name(state).removeprefix("JOB_STATE_")
                    print(f"{event.job.id} {name}: {event.job.reason}", flush=True)
                elif kind == "metrics":
                    m = event.metrics
                    print(f"step {m.step} c_loss {m.c_loss:.4f} g_loss {m.g_loss:.4f}", flush=True)
                elif kind == "checkpoint":
                    print(f"checkpoint step {event.checkpoint.step} {event.checkpoint.url}", flush=True)
            return 0 if state == pb.JOB_STATE_SUCCEEDED else 1


if __name__ == "__main__":
    sys.exit(main())

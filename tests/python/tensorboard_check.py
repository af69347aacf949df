"""Reads a run's TensorBoard event files back with TensorBoard's own reader and checks them
against the run's metrics.jsonl and sample grids.

    tensorboard_check.py OUTPUT_URL

OUTPUT_URL is a local folder or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL, which is
passed to TensorBoard as S3_ENDPOINT). Exits 1 naming the first difference; prints a JSON
summary on success.
"""

import json
import math
import os
import sys

from tensorboard.backend.event_processing import event_accumulator as ea

LOSSES = ["c_loss", "c_wass_loss", "c_gp", "g_loss"]
TIMINGS = ["step_seconds", "loader_wait_seconds", "collective_seconds"]


def read(url, name):
    """Bytes of OUTPUT_URL/name, or None."""
    if url.startswith("s3://"):
        import boto3
        import botocore

        bucket, _, prefix = url[len("s3://"):].partition("/")
        s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"))
        try:
            return s3.get_object(Bucket=bucket, Key=f"{prefix}/{name}".lstrip("/"))["Body"].read()
        except botocore.exceptions.ClientError:
            return None
    path = os.path.join(url, name)
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return f.read()


def fail(message):
    print(f"tensorboard_check: {message}", file=sys.stderr)
    sys.exit(1)


def close(a, b):
    # Scalars are stored as 32-bit floats.
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def main():
    url = sys.argv[1].rstrip("/")
    if url.startswith("s3://") and "AWS_ENDPOINT_URL" in os.environ:
        os.environ["S3_ENDPOINT"] = os.environ["AWS_ENDPOINT_URL"]
    lines = [json.loads(l) for l in read(url, "metrics.jsonl").decode().splitlines() if l.strip()]
    if not lines:
        fail("metrics.jsonl is empty")
    acc = ea.EventAccumulator(f"{url}/tensorboard", size_guidance={ea.SCALARS: 0, ea.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    expected = {f"loss/{k}" for k in LOSSES} | {"perf/images_per_sec"} | {f"time/{k}" for k in TIMINGS}
    evaluated = [l for l in lines if l.get("evaluation")]
    if evaluated:
        expected |= {"eval/accuracy", "eval/classifier_accuracy", "eval/label_swap",
                     "eval/frechet_classifier_features"}
    missing = expected - set(tags["scalars"])
    if missing:
        fail(f"scalar tags missing: {sorted(missing)} (found {sorted(tags['scalars'])})")

    def series(tag):
        return {e.step: e.value for e in acc.Scalars(tag)}

    steps = [l["step"] for l in lines]
    checked = 0
    for key, tag in [(k, f"loss/{k}") for k in LOSSES] + [("images_per_sec", "perf/images_per_sec")] + \
            [(k, f"time/{k}") for k in TIMINGS]:
        got = series(tag)
        if sorted(got) != steps:
            fail(f"{tag} has steps {sorted(got)}, metrics.jsonl has {steps}")
        for line in lines:
            if not close(got[line["step"]], line[key]):
                fail(f"{tag} at step {line['step']} is {got[line['step']]}, metrics.jsonl says {line[key]}")
            checked += 1
    for line in evaluated:
        e = line["evaluation"]
        for key, tag in [("accuracy", "eval/accuracy"), ("label_swap", "eval/label_swap"),
                         ("frechet", "eval/frechet_classifier_features"),
                         ("classifier_accuracy", "eval/classifier_accuracy")]:
            got = series(tag)
            if line["step"] not in got or not close(got[line["step"]], e[key]):
                fail(f"{tag} at step {line['step']} is {got.get(line['step'])}, metrics.jsonl says {e[key]}")
            checked += 1
        for c in e["classes"]:
            got = series(f"eval_class/accuracy/{c['name']}")
            if not close(got[line["step"]], c["accuracy"]):
                fail(f"eval_class/accuracy/{c['name']} differs at step {line['step']}")
            checked += 1
    images = {e.step: e for e in acc.Images("samples")} if "samples" in tags["images"] else {}
    for step, image in images.items():
        png = read(url, f"samples/step-{step:07d}.png")
        if png is None:
            fail(f"TensorBoard has a sample grid at step {step} but the output has no samples/step-{step:07d}.png")
        if image.encoded_image_string != png:
            fail(f"the sample grid of step {step} differs from samples/step-{step:07d}.png")
    print(json.dumps({"scalar_tags": sorted(tags["scalars"]), "steps": steps, "values_checked": checked,
                      "image_steps": sorted(images), "evaluated_steps": [l["step"] for l in evaluated]}))


if __name__ == "__main__":
    main()

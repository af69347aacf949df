#!/usr/bin/env python3
"""Tests of gantry_client, the installed package (not this source tree).

`OfflineTests` need nothing but the package. `CoordinatorTests` run against a real coordinator
with a `worker serve` agent and a small packed dataset; tests/tests/python_client.rs starts them
and passes them in the environment:

    GANTRY_TEST_COORDINATOR    host:port of the coordinator (plain HTTP/2)
    GANTRY_TEST_TOKEN_FILE     its job token file
    GANTRY_TEST_DATA           a packed 32x32 synthetic CelebA (dataprep synth + pack)
    GANTRY_TEST_SCRATCH        a folder for job files and outputs
    GANTRY_TEST_TLS_COORDINATOR, GANTRY_TEST_TLS_CA
                               https://host:port of a coordinator with TLS, and its certificate

Run: .venv/bin/python clients/python/tests/test_client.py [-v]. Without the environment the
coordinator tests are skipped (unittest says so).
"""

import os
import pathlib
import sys
import tempfile
import unittest

import grpc

import gantry_client as g

ENV = ("GANTRY_TEST_COORDINATOR", "GANTRY_TEST_TOKEN_FILE", "GANTRY_TEST_DATA", "GANTRY_TEST_SCRATCH")
LIMIT_S = 180


def tiny_job(data, output, steps, checkpoint_every=0, name="python", eval_every=0):
    """A job that trains in seconds on one CPU thread (the end-to-end tests' size)."""
    return {
        "data": {"url": data},
        "model": {"image_size": 32, "width": 8},
        "train": {
            "batch_size": 8,
            "steps": steps,
            "checkpoint_every": checkpoint_every,
            "sample_every": 0,
            "sample_rows": 2,
            "device": "cpu",
            "threads": 1,
            "eval_every": eval_every,
            "eval_samples": 16,
        },
        "output": {"url": output},
        "job": {"name": name},
    }


class OfflineTests(unittest.TestCase):
    """What the package does before any call."""

    def test_spec_from_dict_sets_the_keys_given_and_names_unknown_ones(self):
        spec = g.spec_from_dict({"data": {"url": "s3://b/d", "condition": "label"}, "train": {"steps": 5, "lr": 1}})
        self.assertEqual(spec.data.url, "s3://b/d")
        self.assertEqual(spec.data.condition, "label")
        self.assertEqual(spec.train.steps, 5)
        self.assertEqual(spec.train.lr, 1.0)
        self.assertFalse(spec.train.HasField("batch_size"), "unset keys stay unset: the coordinator fills defaults")
        self.assertEqual(g.spec_to_dict(spec), {"data": {"url": "s3://b/d", "condition": "label"}, "train": {"steps": 5, "lr": 1.0}})
        for bad, needle in [
            ({"train": {"stepz": 1}}, "unknown key train.stepz"),
            ({"trian": {}}, "unknown table 'trian'"),
            ({"train": {"steps": "ten"}}, "train.steps is 'ten', expected an integer"),
            ({"train": {"steps": -1}}, "train.steps is -1, expected an integer from 0"),
            ({"train": {"steps": True}}, "train.steps is True"),
            ({"model": {"dropout": "x"}}, "model.dropout is 'x', expected a number"),
            ({"data": {"url": 3}}, "data.url is 3, expected a string"),
            ({"data": 3}, "data must be a table"),
        ]:
            with self.assertRaises(g.SpecError, msg=bad) as caught:
                g.spec_from_dict(bad)
            self.assertIn(needle, caught.exception.message)
            self.assertIsInstance(caught.exception, g.InvalidArgument)
            self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
            self.assertTrue(str(caught.exception).startswith("job spec: "), str(caught.exception))

    def test_relative_paths_become_absolute_like_the_cli(self):
        spec = g.spec_from_dict({"data": {"url": "rel/data"}, "output": {"url": "s3://b/run"}})
        self.assertEqual(spec.data.url, os.path.join(os.getcwd(), "rel/data"))
        self.assertEqual(spec.output.url, "s3://b/run")
        kept = g.spec_from_dict({"data": {"url": "rel/data"}}, absolute_paths=False)
        self.assertEqual(kept.data.url, "rel/data")

    def test_toml_files_parse_and_errors_name_the_file_and_key(self):
        with tempfile.TemporaryDirectory() as tmp:
            good = pathlib.Path(tmp, "good.toml")
            good.write_text('[data]\nurl = "/d"\n[train]\nsteps = 3\ndevice = "cpu"\n[output]\nurl = "/o"\n')
            spec = g.spec_from_toml(good)
            self.assertEqual((spec.data.url, spec.train.steps, spec.train.device, spec.output.url), ("/d", 3, "cpu", "/o"))
            bad = pathlib.Path(tmp, "bad.toml")
            bad.write_text('[data]\nurl = "/d"\n[train]\nsteps = 3\nlearning_rate = 0.1\n')
            with self.assertRaises(g.SpecError) as caught:
                g.spec_from_toml(bad)
            self.assertIn(str(bad), caught.exception.message)
            self.assertIn("unknown key train.learning_rate", caught.exception.message)
            broken = pathlib.Path(tmp, "broken.toml")
            broken.write_text("[data\n")
            with self.assertRaises(g.SpecError) as caught:
                g.spec_from_toml(broken)
            self.assertIn(str(broken), caught.exception.message)

    def test_tokens_and_addresses_are_checked_like_the_cli(self):
        for kwargs, needle in [
            ({"token": " \n"}, "the token is empty"),
            ({"token": "a b"}, "printable ASCII without spaces"),
            ({"token_file": "/nonexistent/job.token"}, "cannot read the token file /nonexistent/job.token"),
            ({"token": "t", "token_file": "f"}, "not both"),
        ]:
            with self.assertRaises(g.ConfigError, msg=kwargs) as caught:
                g.Client("127.0.0.1:1", **kwargs)
            self.assertIn(needle, str(caught.exception))
        saved = os.environ.pop("GANTRY_TOKEN", None)
        try:
            with self.assertRaises(g.ConfigError) as caught:
                g.Client("127.0.0.1:1")
            self.assertIn("GANTRY_TOKEN", str(caught.exception))
            os.environ["GANTRY_TOKEN"] = "from-env\n"
            with g.Client("127.0.0.1:1") as client:
                self.assertEqual(client._metadata, (("authorization", "Bearer from-env"),))
        finally:
            os.environ.pop("GANTRY_TOKEN", None)
            if saved is not None:
                os.environ["GANTRY_TOKEN"] = saved
        for address in ["ftp://h:1", "http://", "http://h:1/path"]:
            with self.assertRaises(g.ConfigError, msg=address):
                g.Client(address, token="t")
        with self.assertRaises(g.ConfigError) as caught:
            g.Client("https://h:1", token="t", tls_ca="/nonexistent/ca.pem")
        self.assertIn("cannot read the CA certificate /nonexistent/ca.pem", str(caught.exception))

    def test_states_by_name(self):
        self.assertEqual(g.state_value("running"), g.pb.JOB_STATE_RUNNING)
        self.assertEqual(g.state_value("JOB_STATE_FAILED"), g.pb.JOB_STATE_FAILED)
        self.assertEqual(g.state_name(g.pb.JOB_STATE_SUCCEEDED), "SUCCEEDED")
        self.assertTrue(g.is_final(g.pb.JOB_STATE_CANCELLED))
        self.assertFalse(g.is_final(g.pb.JOB_STATE_QUEUED))
        with self.assertRaises(ValueError):
            g.state_value("done")

    def test_an_unreachable_coordinator_is_unavailable(self):
        with g.Client("127.0.0.1:1", token="t", timeout=10) as client:
            with self.assertRaises(g.Unavailable) as caught:
                client.list()
        self.assertEqual(caught.exception.code, grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(caught.exception.call, "list")


@unittest.skipUnless(all(v in os.environ for v in ENV), "needs a coordinator: run tests/tests/python_client.rs")
class CoordinatorTests(unittest.TestCase):
    """Real jobs on a real coordinator and worker."""

    @classmethod
    def setUpClass(cls):
        cls.address = os.environ["GANTRY_TEST_COORDINATOR"]
        cls.token_file = os.environ["GANTRY_TEST_TOKEN_FILE"]
        cls.data = os.environ["GANTRY_TEST_DATA"]
        cls.scratch = pathlib.Path(os.environ["GANTRY_TEST_SCRATCH"])
        cls.client = g.Client(cls.address, token_file=cls.token_file)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()

    def output(self, name):
        return str(self.scratch / "runs" / name)

    def test_a_job_from_a_dict_is_watched_to_success(self):
        output = self.output("dict")
        job = self.client.submit(
            tiny_job(self.data, output, steps=6, checkpoint_every=3, name="from-dict", eval_every=3)
        )
        self.assertRegex(job.id, r"^job-\d+$")
        self.assertIn(g.state_name(job.state), {"QUEUED", "RUNNING"})

        events = list(self.client.watch(job.id, timeout=LIMIT_S))
        self.assertIsInstance(events[0], g.JobUpdate)
        self.assertIsNone(events[0].previous_state)
        self.assertIsInstance(events[-1], g.End)
        self.assertEqual(sum(isinstance(e, g.End) for e in events), 1)
        end = events[-1]
        self.assertEqual((end.state, end.reason), ("SUCCEEDED", "trained to step 6"), events)
        self.assertTrue(end.succeeded)
        states = [e.state for e in events if isinstance(e, g.JobUpdate) and e.state_changed]
        self.assertIn("RUNNING", states)
        self.assertEqual(states[-1], "SUCCEEDED")
        steps = [e.step for e in events if isinstance(e, g.Step)]
        self.assertTrue(steps, events)
        self.assertEqual(steps, sorted(set(steps)), "steps increase")
        self.assertEqual(steps[-1], 6)
        for e in events:
            if isinstance(e, g.Step):
                self.assertGreater(e.images_per_sec, 0)
                self.assertGreater(e.step_seconds, 0)
        # The steps where rank 0 evaluated carry the evaluation, with its report's URL.
        evaluated = {e.step: e.evaluation for e in events if isinstance(e, g.Step) and e.evaluation is not None}
        self.assertEqual(sorted(evaluated), [3, 6], events)
        for step, evaluation in evaluated.items():
            self.assertEqual(evaluation.step, step)
            self.assertEqual(evaluation.url, f"{output}/eval/step-{step:07d}.json")
            self.assertTrue(pathlib.Path(evaluation.url).is_file())
            self.assertEqual([c.name for c in evaluation.classes], ["not Blond_Hair", "Blond_Hair"])
            self.assertTrue(0 <= evaluation.accuracy <= 1 and 0 <= evaluation.label_swap <= 1, evaluation)
        checkpoints = [(e.step, e.url) for e in events if isinstance(e, g.Checkpoint)]
        self.assertIn((3, f"{output}/checkpoints/step-0000003"), checkpoints)
        self.assertEqual(checkpoints[-1], (6, f"{output}/checkpoints/step-0000006"))
        self.assertTrue(pathlib.Path(output, "checkpoints/step-0000006/manifest.json").is_file())

        got = self.client.get(job.id)
        self.assertEqual(g.state_name(got.state), "SUCCEEDED")
        self.assertEqual(got.metrics.step, 6)
        self.assertEqual(got.checkpoint.step, 6)
        self.assertEqual(got.evaluation.step, 6, "the record keeps the latest evaluation")
        self.assertEqual(len(got.attempts), 1)
        spec = g.spec_to_dict(got.spec)
        self.assertEqual(spec["job"]["name"], "from-dict")
        self.assertEqual(spec["train"]["critic_steps"], 3, "the coordinator fills in defaults")

        self.assertIn(job.id, [j.id for j in self.client.list()])
        self.assertIn(job.id, [j.id for j in self.client.list(["succeeded"])])
        self.assertNotIn(job.id, [j.id for j in self.client.list(states=["cancelled", "failed"])])
        ids = [j.id for j in self.client.list()]
        self.assertEqual(ids, sorted(ids), "oldest first")

        # A finished job's watch is its record and its end.
        again = list(self.client.watch(job.id))
        self.assertEqual([type(e) for e in again], [g.JobUpdate, g.End])

    def test_a_job_from_a_toml_file_with_a_relative_output(self):
        file = self.scratch / "from-toml.toml"
        file.write_text(
            f'[data]\nurl = "{self.data}"\n[model]\nimage_size = 32\nwidth = 8\n'
            '[train]\nbatch_size = 8\nsteps = 4\ncheckpoint_every = 0\nsample_every = 0\nsample_rows = 2\n'
            'device = "cpu"\nthreads = 1\n[output]\nurl = "runs/toml"\n[job]\nname = "from-toml"\n'
        )
        cwd = os.getcwd()
        os.chdir(self.scratch)
        try:
            job = self.client.submit(file.name)
        finally:
            os.chdir(cwd)
        self.assertEqual(job.spec.output.url, str(self.scratch / "runs/toml"))
        seen = []
        final = self.client.wait(job.id, timeout=LIMIT_S, check=True, on_event=seen.append)
        self.assertEqual(g.state_name(final.state), "SUCCEEDED", final.reason)
        self.assertIsInstance(seen[-1], g.End)
        self.assertTrue((self.scratch / "runs/toml/checkpoints/step-0000004/manifest.json").is_file())

    def test_a_long_job_is_cancelled(self):
        job = self.client.submit(tiny_job(self.data, self.output("long"), steps=100_000, name="long"))
        watch = self.client.watch(job.id, timeout=LIMIT_S)
        for event in watch:
            if isinstance(event, g.Step):
                break
            self.assertNotIsInstance(event, g.End, "the long job ended before its first step")
        cancelled = self.client.cancel(job.id, reason="enough of that")
        self.assertEqual(g.state_name(cancelled.state), "CANCELLED")
        self.assertIn("enough of that", cancelled.reason)
        rest = list(watch)
        self.assertIsInstance(rest[-1], g.End)
        self.assertEqual(rest[-1].state, "CANCELLED")
        self.assertFalse(rest[-1].succeeded)
        with self.assertRaises(g.FailedPrecondition) as caught:
            self.client.cancel(job.id)
        self.assertIn(job.id, caught.exception.message)
        with self.assertRaises(g.JobNotSucceeded) as caught:
            self.client.wait(job.id, check=True)
        self.assertEqual(g.state_name(caught.exception.job.state), "CANCELLED")

    def test_errors_keep_the_coordinators_code_and_message(self):
        before = len(self.client.list())
        with g.Client(self.address, token="wrong") as wrong:
            with self.assertRaises(g.Unauthenticated) as caught:
                wrong.list()
            self.assertEqual(caught.exception.message, "wrong token")
            self.assertEqual(caught.exception.code, grpc.StatusCode.UNAUTHENTICATED)
            self.assertEqual(str(caught.exception), "list: UNAUTHENTICATED: wrong token")
            with self.assertRaises(g.Unauthenticated):
                wrong.submit(tiny_job(self.data, self.output("never"), steps=1))

        for call in (self.client.get, self.client.cancel, self.client.watch):
            with self.assertRaises(g.NotFound, msg=call.__name__) as caught:
                call("job-999999")
            self.assertEqual(caught.exception.message, "no job job-999999")
            self.assertEqual(caught.exception.code, grpc.StatusCode.NOT_FOUND)

        bad = tiny_job(self.data, self.output("never"), steps=1)
        bad["train"]["stepz"] = 3
        with self.assertRaises(g.SpecError) as caught:
            self.client.submit(bad)
        self.assertIn("unknown key train.stepz", str(caught.exception))

        # Refused by the coordinator, every problem at once.
        bad = tiny_job(self.data, self.output("never"), steps=1)
        bad["train"]["lr"] = -1
        bad["job"]["workers"] = 0
        bad["data"]["condition"] = "Blond"
        with self.assertRaises(g.InvalidArgument) as caught:
            self.client.submit(bad)
        self.assertNotIsInstance(caught.exception, g.SpecError)
        self.assertEqual(caught.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(caught.exception.call, "submit")
        for needle in ("train.lr is -1", "job.workers is 0", "data.condition: ", "Blond"):
            self.assertIn(needle, caught.exception.message)
        missing = tiny_job(str(self.scratch / "nowhere"), self.output("never"), steps=1)
        with self.assertRaises(g.InvalidArgument) as caught:
            self.client.submit(missing)
        self.assertIn("data.url: cannot open the dataset", caught.exception.message)

        self.assertEqual(len(self.client.list()), before, "refused jobs are not queued")

    @unittest.skipUnless("GANTRY_TEST_TLS_COORDINATOR" in os.environ, "needs a TLS coordinator")
    def test_tls_with_the_coordinators_certificate(self):
        https = os.environ["GANTRY_TEST_TLS_COORDINATOR"]
        ca = os.environ["GANTRY_TEST_TLS_CA"]
        with g.Client(https, tls_ca=ca, token_file=self.token_file) as client:
            self.assertEqual(client.list(), [])
        # The system's CAs do not know a self-signed certificate; plain HTTP/2 is no TLS.
        for address, kwargs in ((https, {}), (https.removeprefix("https://"), {})):
            saved = os.environ.pop("GANTRY_TLS_CA", None)
            try:
                with g.Client(address, token_file=self.token_file, timeout=10, **kwargs) as client:
                    with self.assertRaises(g.Unavailable, msg=address):
                        client.list()
            finally:
                if saved is not None:
                    os.environ["GANTRY_TLS_CA"] = saved


if __name__ == "__main__":
    print(f"gantry_client from {g.__file__}", file=sys.stderr)
    unittest.main()

//! The Python client package (`clients/python`, installed into `.venv` by `deploy/bootstrap.sh`)
//! against a real coordinator and `worker serve` agent: the package's test script, with real
//! jobs, and the example script.
//!
//! The scripts import the installed `gantry_client`, not the source tree: after changing the
//! package or the proto, run `deploy/bootstrap.sh` (it re-installs the package) first.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cluster::*;
use crate::util::*;

/// The repository's root.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `.venv/bin/python`, with `gantry_client` installed.
pub(crate) fn python() -> PathBuf {
    let python = root().join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run deploy/bootstrap.sh",
        python.display()
    );
    let out = run_with(Command::new(&python).args(["-c", "import gantry_client"]));
    assert!(
        out.status.success(),
        "gantry_client is not installed in .venv: run deploy/bootstrap.sh (it installs clients/python)\n{}",
        text(&out).1
    );
    python
}

/// A Python command without the caller's gantry settings, so only what the test passes counts.
pub(crate) fn python_command(script: &str) -> Command {
    let mut command = Command::new(python());
    command
        .arg(root().join(script))
        .env_remove("GANTRY_COORDINATOR")
        .env_remove("GANTRY_TOKEN")
        .env_remove("GANTRY_TLS_CA");
    command
}

#[test]
fn the_python_client_package_runs_real_jobs() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let _worker = worker(&scratch, &coord.addr, "w1");
        // A second coordinator, with TLS, for the client's https:// addresses.
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        std::fs::write(scratch.path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(scratch.path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let tls = coordinator(
            &scratch,
            scratch.path("tls-state").to_str().unwrap(),
            "127.0.0.1:0",
            &[
                "--tls-cert",
                scratch.path("cert.pem").to_str().unwrap(),
                "--tls-key",
                scratch.path("key.pem").to_str().unwrap(),
            ],
        );
        let work = scratch.path("python");
        std::fs::create_dir(&work).unwrap();

        let out = run_with(
            python_command("clients/python/tests/test_client.py")
                .arg("-v")
                .env("GANTRY_TEST_COORDINATOR", &coord.addr)
                .env("GANTRY_TEST_TOKEN_FILE", scratch.path("job.token"))
                .env("GANTRY_TEST_DATA", scratch.data())
                .env("GANTRY_TEST_SCRATCH", &work)
                .env("GANTRY_TEST_TLS_COORDINATOR", format!("https://{}", tls.addr))
                .env("GANTRY_TEST_TLS_CA", scratch.path("cert.pem")),
        );
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "clients/python/tests/test_client.py failed ({}):\n{stdout}\n{stderr}\n--- w1.log\n{}\n--- coordinator.log\n{}",
            out.status,
            scratch.log("w1.log"),
            scratch.log("coordinator.log")
        );
        // unittest reports on stderr; every test ran, none was skipped.
        assert!(
            stderr.contains("\nOK\n") && !stderr.contains("skipped"),
            "not every test ran:\n{stderr}"
        );
        println!("{stderr}");
    });
}

#[test]
fn the_example_script_submits_and_watches_a_job() {
    serial(async {
        let scratch = Scratch::new();
        let coord = coordinator(&scratch, scratch.path("state").to_str().unwrap(), "127.0.0.1:0", &[]);
        let _worker = worker(&scratch, &coord.addr, "w1");
        let out = run_with(
            python_command("clients/python/examples/submit_and_watch.py")
                .args(["--coordinator", &coord.addr, "--token-file"])
                .arg(scratch.path("job.token"))
                .args(["--data", &scratch.data(), "--output"])
                .arg(scratch.path("runs/python"))
                .args([
                    "--image-size",
                    "32",
                    "--width",
                    "8",
                    "--batch-size",
                    "8",
                    "--steps",
                    "6",
                    "--checkpoint-every",
                    "3",
                    "--sample-every",
                    "0",
                    "--device",
                    "cpu",
                    "--threads",
                    "1",
                ]),
        );
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{stdout}\n{stderr}\n{}", scratch.log("w1.log"));
        for needle in [
            "job-000001\n",
            "step 6 ",
            "checkpoint step 3 ",
            "SUCCEEDED: trained to step 6",
        ] {
            assert!(stdout.contains(needle), "{needle:?} missing from\n{stdout}");
        }
        assert!(committed(&scratch.path("runs/python"), 6));
        let listed = ok(scratch.cli(&coord.addr, &["list"]));
        assert!(listed.contains("python-client"), "{listed}");

        // A refused call exits 2 with the coordinator's message.
        let out = run_with(
            python_command("clients/python/examples/submit_and_watch.py")
                .args(["--coordinator", &coord.addr, "--token-file"])
                .arg(scratch.path("worker.token"))
                .args(["--data", &scratch.data(), "--output", "/nowhere"]),
        );
        assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
        assert!(
            text(&out).1.contains("submit: UNAUTHENTICATED: wrong token"),
            "{:?}",
            text(&out)
        );
    });
}

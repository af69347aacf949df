//! Jobs stay inside their storage: the coordinator's and the workers' allow-lists (with the
//! usual tricks), and runs and packs that never write over files gantry did not write.

use std::time::Duration;

use gantry_proto::pb;

use crate::cluster::*;
use crate::util::*;

const LIMIT: Duration = Duration::from_secs(120);

/// A job file like `Scratch::job_file`, with its output at `output` and its data at `data`.
fn job_at(scratch: &Scratch, name: &str, data: &str, output: &str) -> std::path::PathBuf {
    let file = scratch.job_file(name, 3, 0, "");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("url = ") && l.contains("/runs/") {
                format!("url = \"{output}\"")
            } else if l.starts_with("url = ") {
                format!("url = \"{data}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn jobs_outside_the_allowed_prefixes_are_refused_at_submit_and_touch_nothing() {
    serial(async {
        let scratch = Scratch::new();
        let root = scratch.path("").display().to_string();
        let root = root.trim_end_matches('/');
        let state = scratch.path("state");
        let coord = coordinator(
            &scratch,
            state.to_str().unwrap(),
            "127.0.0.1:0",
            &[
                "--allow-read",
                &format!("{root}/data"),
                "--allow-write",
                &format!("{root}/runs"),
            ],
        );
        let data = scratch.data();
        let refused = [
            (data.clone(), format!("{root}/runs/../secrets/a"), "output.url"),
            (data.clone(), format!("{root}/runs//..//secrets/b"), "output.url"),
            (
                data.clone(),
                format!("file://{root}/runs/%2e%2e/secrets/c"),
                "output.url",
            ),
            (data.clone(), format!("{root}/runs-old/d"), "output.url"),
            (data.clone(), format!("{root}/data/e"), "output.url"),
            (format!("{root}/secrets"), format!("{root}/runs/f"), "data.url"),
            (format!("{root}/runs/../secrets"), format!("{root}/runs/g"), "data.url"),
        ];
        for (i, (data_url, output, key)) in refused.iter().enumerate() {
            let file = job_at(&scratch, &format!("bad{i}"), data_url, output);
            let out = scratch.cli(&coord.addr, &["submit", file.to_str().unwrap()]);
            let (_, stderr) = text(&out);
            assert!(!out.status.success(), "{output} was accepted");
            assert!(
                stderr.contains("PermissionDenied") || stderr.contains("permission"),
                "{stderr}"
            );
            assert!(
                stderr.contains(key) && stderr.contains("is outside the prefixes jobs may"),
                "{stderr}"
            );
            assert!(
                stderr.contains(&format!("file://{root}/runs")),
                "names the prefixes: {stderr}"
            );
        }
        // Never the job records, even when every prefix is allowed.
        let file = job_at(&scratch, "records", &data, &format!("{root}/state/jobs/x"));
        let (_, stderr) = text(&scratch.cli(&coord.addr, &["submit", file.to_str().unwrap()]));
        assert!(stderr.contains("overlaps the coordinator's job records"), "{stderr}");
        assert!(!scratch.path("secrets").exists(), "nothing was written outside");
        assert!(!scratch.path("runs-old").exists());
        // Inside: accepted.
        let good = job_at(&scratch, "good", &data, &format!("{root}/runs/good"));
        ok(scratch.cli(&coord.addr, &["submit", good.to_str().unwrap()]));
    });
}

#[test]
fn a_worker_keeps_to_its_own_lists_with_symlinks_resolved() {
    serial(async {
        let scratch = Scratch::new();
        let root = scratch.path("").display().to_string();
        let root = root.trim_end_matches('/').to_string();
        // The coordinator allows all of runs/; runs/link points outside it.
        std::fs::create_dir_all(scratch.path("runs")).unwrap();
        std::fs::create_dir_all(scratch.path("elsewhere")).unwrap();
        std::os::unix::fs::symlink(scratch.path("elsewhere"), scratch.path("runs/link")).unwrap();
        let coord = coordinator(
            &scratch,
            scratch.path("state").to_str().unwrap(),
            "127.0.0.1:0",
            &["--allow-write", &format!("{root}/runs")],
        );
        let mut client = jobs(&coord.addr, JOB_TOKEN);
        let _agent = worker_with(
            &scratch,
            &coord.addr,
            "w1",
            &[
                "--allow-write",
                &format!("{root}/runs"),
                "--allow-read",
                &format!("{root}/data"),
            ],
        );
        let file = job_at(&scratch, "linked", &scratch.data(), &format!("{root}/runs/link/run"));
        let id = ok(scratch.cli(&coord.addr, &["submit", file.to_str().unwrap()]))
            .trim()
            .to_string();
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(job.state(), pb::JobState::Failed, "{}", job.reason);
        assert_eq!(job.attempts.len(), 1, "not retried");
        assert!(
            job.reason.contains("output.url")
                && job
                    .reason
                    .contains("is outside the prefixes this worker lets jobs write"),
            "{}",
            job.reason
        );
        assert_eq!(std::fs::read_dir(scratch.path("elsewhere")).unwrap().count(), 0);
        // The same worker trains a job inside its lists.
        let file = job_at(&scratch, "inside", &scratch.data(), &format!("{root}/runs/inside"));
        let id = ok(scratch.cli(&coord.addr, &["submit", file.to_str().unwrap()]))
            .trim()
            .to_string();
        let job = watch_to_end(&mut client, &id, LIMIT).await;
        assert_eq!(
            job.state(),
            pb::JobState::Succeeded,
            "{}\n{}",
            job.reason,
            scratch.log("w1.log")
        );
    });
}

#[test]
fn runs_and_packs_never_write_over_foreign_files() {
    let scratch = Scratch::new();
    // A run into a folder of someone else's files is refused, naming the first; nothing changes.
    std::fs::create_dir_all(scratch.path("theirs")).unwrap();
    std::fs::write(scratch.path("theirs/config.toml"), "mine\n").unwrap();
    let file = job_at(
        &scratch,
        "foreign",
        &scratch.data(),
        scratch.path("theirs").to_str().unwrap(),
    );
    let out = run("worker", &["train", "--config", file.to_str().unwrap()]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("holds \"config.toml\", which gantry did not write"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path("theirs/config.toml")).unwrap(),
        "mine\n"
    );
    assert!(!scratch.path("theirs/checkpoints").exists());
    // An empty folder becomes a run (marker first), and the run resumes there.
    let mine = scratch.path("runs/mine");
    let file = job_at(&scratch, "mine", &scratch.data(), mine.to_str().unwrap());
    ok(run(
        "worker",
        &["train", "--config", file.to_str().unwrap(), "--steps", "2"],
    ));
    assert!(mine.join(".gantry-run").exists());
    let resumed = ok(run(
        "worker",
        &["train", "--config", file.to_str().unwrap(), "--steps", "3"],
    ));
    assert!(resumed.contains("resumed from step 2"), "{resumed}");

    // dataprep pack: refused into a foreign folder, allowed with --force (their file stays), and
    // a previous dataset is simply replaced.
    let input = scratch.path("celeba");
    let pack = |output: &std::path::Path, force: bool| {
        let mut args = vec![
            "pack",
            "celeba",
            "--input",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--size",
            "32",
        ];
        if force {
            args.push("--force");
        }
        run("dataprep", &args)
    };
    let theirs = scratch.path("theirs");
    let out = pack(&theirs, false);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("holds \"config.toml\", which gantry did not write"),
        "{stderr}"
    );
    assert!(!theirs.join("manifest.json").exists());
    ok(pack(&theirs, true));
    assert!(theirs.join("manifest.json").exists());
    assert_eq!(std::fs::read_to_string(theirs.join("config.toml")).unwrap(), "mine\n");
    ok(pack(&scratch.path("data"), false));
}

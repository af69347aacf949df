//! `dataprep` as a user runs it: synth, pack, inspect, and bad input on the command line.

use crate::util::*;

#[test]
fn synth_pack_inspect_with_preview() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("celeba");
    let out = dir.path().join("packed");
    let input_s = input.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    let stdout = ok(run(
        "dataprep",
        &["synth", "celeba", "--output", input_s, "--count", "40", "--seed", "3"],
    ));
    assert!(stdout.contains("wrote 40 synthetic CelebA images"), "{stdout}");
    // A corrupt image is skipped and reported, not fatal.
    std::fs::write(input.join("img_align_celeba/000002.jpg"), b"junk").unwrap();
    let stdout = ok(run(
        "dataprep",
        &[
            "pack",
            "celeba",
            "--input",
            input_s,
            "--output",
            out_s,
            "--size",
            "32",
            "--shard-mb",
            "0.1",
        ],
    ));
    assert!(stdout.contains("packed 39 images"), "{stdout}");
    assert!(
        stdout.contains("skipped 1") && stdout.contains("000002.jpg"),
        "{stdout}"
    );

    let preview = dir.path().join("preview.png");
    let stdout = ok(run(
        "dataprep",
        &[
            "inspect",
            out_s,
            "--preview",
            preview.to_str().unwrap(),
            "--per-class",
            "4",
        ],
    ));
    assert!(stdout.contains("rows      39"), "{stdout}");
    assert!(stdout.contains("Blond_Hair"), "{stdout}");
    let image = image::open(&preview).unwrap();
    // Two rows (not blond, blond) of four 64-pixel cells, plus labels.
    assert!(image.width() > 4 * 64 && image.height() > 2 * 64 && image.height() < 3 * 64 + 40);

    let json = ok(run("dataprep", &["inspect", out_s, "--json"]));
    let manifest: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(manifest["rows"], 39);
    assert_eq!(manifest["skipped_count"], 1);
}

#[test]
fn structural_errors_exit_non_zero_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("celeba");
    let input_s = input.to_str().unwrap();
    ok(run(
        "dataprep",
        &[
            "synth",
            "celeba",
            "--output",
            input_s,
            "--count",
            "6",
            "--dialect",
            "kaggle",
        ],
    ));
    let attr = input.join("list_attr_celeba.csv");
    let csv = std::fs::read_to_string(&attr).unwrap();
    let broken: Vec<String> = csv
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 3 {
                l.rsplit_once(',').unwrap().0.to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&attr, broken.join("\n")).unwrap();
    let out = dir.path().join("packed");
    let output = run(
        "dataprep",
        &["pack", "celeba", "--input", input_s, "--output", out.to_str().unwrap()],
    );
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(
        stderr.contains("list_attr_celeba.csv line 4") && stderr.contains("found 39"),
        "{stderr}"
    );
    assert!(!out.join("manifest.json").exists());

    let output = run("dataprep", &["inspect", out.to_str().unwrap()]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("no dataset at"), "{stderr}");
}

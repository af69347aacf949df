//! Bad input: clear errors naming the file and line, skipped images counted, and no dataset that
//! looks complete after a failed pack.

use base::Location;
use dataprep::Dataset;
use dataprep::Error;
use dataprep::celeba::Dialect;

use crate::util::*;

#[tokio::test]
async fn corrupt_truncated_missing_and_unlisted_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 20, Dialect::Official);
    let images = dir.path().join("img_align_celeba");
    // Garbage bytes under a JPEG name.
    std::fs::write(images.join("000003.jpg"), b"this is not a jpeg at all").unwrap();
    // A JPEG cut in half.
    let full = std::fs::read(images.join("000004.jpg")).unwrap();
    std::fs::write(images.join("000004.jpg"), &full[..full.len() / 2]).unwrap();
    // A JPEG with a valid header and end marker but garbage in between.
    let mut mangled = full.clone();
    let n = mangled.len();
    mangled[200..n - 2].iter_mut().for_each(|b| *b = 0xFF);
    std::fs::write(images.join("000005.jpg"), &mangled).unwrap();
    // Listed in the attribute file, missing on disk.
    std::fs::remove_file(images.join("000006.jpg")).unwrap();
    // On disk, not listed.
    std::fs::copy(images.join("000007.jpg"), images.join("999999.jpg")).unwrap();

    let url = memory_url("skips");
    let summary = pack_celeba(dir.path(), &url, &small_options()).await;
    let m = &summary.manifest;
    let reason = |id: &str| m.skipped.iter().find(|s| s.id == id).map(|s| s.reason.clone());
    assert_eq!(m.rows, 16, "20 listed - 3 undecodable - 1 missing");
    assert_eq!(m.skipped_count, 5, "{:?}", m.skipped);
    assert!(
        reason("000003.jpg").unwrap().contains("not a JPEG or PNG"),
        "{:?}",
        reason("000003.jpg")
    );
    assert!(
        reason("000004.jpg").unwrap().contains("truncated"),
        "{:?}",
        reason("000004.jpg")
    );
    assert!(
        reason("000005.jpg").unwrap().contains("corrupt"),
        "{:?}",
        reason("000005.jpg")
    );
    let missing = reason("000006.jpg").unwrap();
    assert!(
        missing.contains("list_attr_celeba.txt line 8") && missing.contains("does not exist"),
        "{missing}"
    );
    assert!(
        reason("999999.jpg")
            .unwrap()
            .contains("not listed in list_attr_celeba.txt")
    );
    let ids: Vec<String> = read_all(&url, None, None).await.into_iter().map(|r| r.0).collect();
    for bad in ["000003.jpg", "000004.jpg", "000005.jpg", "000006.jpg", "999999.jpg"] {
        assert!(!ids.iter().any(|id| id == bad), "{bad} must not be packed");
    }
}

fn scan_error(dir: &std::path::Path) -> String {
    dataprep::celeba::scan(dir).expect_err("scan must fail").to_string()
}

#[test]
fn wrong_attribute_count_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 10, Dialect::Official);
    let path = dir.path().join("list_attr_celeba.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[6] = lines[6].rsplit_once(' ').unwrap().0.to_string(); // drop the last value of image 5
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let message = scan_error(dir.path());
    assert!(message.contains("list_attr_celeba.txt line 7"), "{message}");
    assert!(
        message.contains("000005.jpg: expected 40 attribute values, found 39"),
        "{message}"
    );
}

#[test]
fn bad_attribute_value_and_short_file_are_structural_errors() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 10, Dialect::Kaggle);
    let path = dir.path().join("list_attr_celeba.csv");
    let text = std::fs::read_to_string(&path).unwrap().replacen(",-1", ",maybe", 1);
    std::fs::write(&path, text).unwrap();
    let message = scan_error(dir.path());
    assert!(
        message.contains("list_attr_celeba.csv line 2") && message.contains("\"maybe\""),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 10, Dialect::Official);
    let path = dir.path().join("list_attr_celeba.txt");
    let text = std::fs::read_to_string(&path).unwrap();
    let cut: Vec<&str> = text.lines().take(8).collect();
    std::fs::write(&path, cut.join("\n")).unwrap();
    let message = scan_error(dir.path());
    assert!(
        message.contains("line 1") && message.contains("declares 10 images but the file lists 6"),
        "{message}"
    );
}

#[test]
fn unreadable_or_wrong_input_folders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let message = scan_error(&missing);
    assert!(message.contains("nowhere"), "{message}");
    let message = scan_error(dir.path());
    assert!(message.contains("not a CelebA folder"), "{message}");
    let err = dataprep::fashion_mnist::scan(dir.path()).unwrap_err().to_string();
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    let err = dataprep::folder::scan(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no class sub-folders"), "{err}");
}

#[test]
fn truncated_idx_file_is_rejected_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    crate::inputs::write_fashion_mnist(dir.path(), 5, 5);
    let path = dir.path().join("t10k-images-idx3-ubyte");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = dataprep::fashion_mnist::scan(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("t10k-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_pack_leaves_no_manifest_and_a_rerun_replaces_everything() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 40, Dialect::Official);
    let out = dir.path().join("out");
    let url = out.to_str().unwrap().to_string();
    let first = pack_celeba(dir.path(), &url, &small_options()).await;
    assert!(first.manifest.shards.len() >= 3);
    assert!(Dataset::open(&url).await.is_ok());

    // Make the second shard impossible to write: the pack fails midway.
    std::fs::remove_file(out.join("shard-00001.parquet")).unwrap();
    std::fs::create_dir(out.join("shard-00001.parquet")).unwrap();
    let source = dataprep::celeba::scan(dir.path()).unwrap();
    let recipe = dataprep::imaging::Recipe::square(dataprep::imaging::Crop::Center, 32, 3);
    let result = dataprep::pack::pack(source, recipe, &Location::parse(&url).unwrap(), &small_options()).await;
    assert!(result.is_err());
    assert!(
        !out.join("manifest.json").exists(),
        "a failed pack must not leave a manifest"
    );
    match Dataset::open(&url).await {
        Err(Error::NoDataset { .. }) => {}
        other => panic!("expected NoDataset, got {other:?}"),
    }

    // A re-run with a different input replaces the old shards entirely.
    std::fs::remove_dir(out.join("shard-00001.parquet")).unwrap();
    let small = dir.path().join("small");
    synth(&small, 9, Dialect::Official);
    let second = pack_celeba(&small, &url, &small_options()).await;
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut expected: Vec<String> = second.manifest.shards.iter().map(|s| s.file.clone()).collect();
    expected.push("manifest.json".into());
    // The marker that makes the folder a gantry dataset, written first by every pack.
    expected.push(base::access::DATASET_MARKER.into());
    expected.sort();
    assert_eq!(on_disk, expected);
    assert_eq!(read_all(&url, None, None).await.len(), 9);
}

/// The first error an epoch of `loader` yields, as text.
async fn first_error(loader: &dataprep::Loader) -> Option<String> {
    let mut stream = loader.epoch(0, 0);
    while let Some(batch) = stream.next().await {
        if let Err(e) = batch {
            return Some(e.to_string());
        }
    }
    None
}

#[tokio::test]
async fn a_missing_or_truncated_shard_is_named_by_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 24, Dialect::Official);
    let out = dir.path().join("out");
    let url = out.to_str().unwrap().to_string();
    let summary = pack_celeba(dir.path(), &url, &small_options()).await;
    let victim = &summary.manifest.shards[1].file;
    let bytes = std::fs::read(out.join(victim)).unwrap();
    std::fs::write(out.join(victim), &bytes[..bytes.len() - 10]).unwrap();
    let dataset = Dataset::open(&url).await.unwrap();
    let loader = dataset
        .loader(dataprep::LoaderOptions {
            split: None,
            batch_size: 4,
            shuffle: false,
            ..Default::default()
        })
        .unwrap();
    let error = first_error(&loader).await.expect("reading a truncated shard must fail");
    assert!(
        error.contains(victim.as_str()) && error.contains("truncated"),
        "{error}"
    );

    std::fs::remove_file(out.join(victim)).unwrap();
    let error = first_error(&loader).await.expect("reading a missing shard must fail");
    assert!(error.contains(victim.as_str()) && error.contains("missing"), "{error}");
}

#[test]
fn bad_urls_and_options_are_explained() {
    let err = Location::parse("ftp://host/x").unwrap_err().to_string();
    assert!(err.contains("unsupported scheme \"ftp\""), "{err}");
    let err = Location::parse("s3:///prefix").unwrap_err().to_string();
    assert!(err.contains("needs a bucket"), "{err}");
    let err = "box:1,2,3".parse::<dataprep::imaging::Crop>().unwrap_err();
    assert!(err.contains("box:X,Y,WIDTH,HEIGHT"), "{err}");
}

#[tokio::test]
async fn a_manifest_that_does_not_fit_its_shards_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 12, Dialect::Official);
    let out = dir.path().join("out");
    let url = out.to_str().unwrap().to_string();
    pack_celeba(dir.path(), &url, &small_options()).await;
    let path = out.join("manifest.json");
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let rewrite = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut manifest = original.clone();
        edit(&mut manifest);
        std::fs::write(&path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    };

    // 100000 x 100000 x 3 bytes do not fit in the u32 arithmetic of an image's size.
    rewrite(&|m| {
        m["image"]["height"] = 100_000.into();
        m["image"]["width"] = 100_000.into();
    });
    let error = Dataset::open(&url).await.unwrap_err().to_string();
    assert!(error.contains("image shape 100000x100000x3 is impossible"), "{error}");

    // Classes in the manifest but no label column in the shards: no silent class 0.
    rewrite(&|m| m["classes"] = serde_json::json!(["a", "b"]));
    let loader = Dataset::open(&url)
        .await
        .unwrap()
        .loader(dataprep::LoaderOptions {
            split: None,
            batch_size: 4,
            condition: Some(dataprep::Condition::Label),
            ..Default::default()
        })
        .unwrap();
    let error = first_error(&loader)
        .await
        .expect("reading labels that are not there must fail");
    assert!(error.contains("column label is missing"), "{error}");
}

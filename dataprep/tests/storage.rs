//! The same pack/read round trip over every kind of storage: in-memory, local path, file:// URL,
//! and a real S3 API (the moto server that tests/run.sh starts; `GANTRY_TEST_S3` names a bucket).

use base::Location;
use dataprep::Dataset;
use dataprep::celeba::Dialect;

use crate::util::*;

async fn location_suite(url: &str) {
    let location = Location::parse(url).unwrap();
    assert_eq!(location.get_opt("absent.json").await.unwrap(), None);
    location.put("a/b.txt", b"hello".to_vec()).await.unwrap();
    location.put("top.txt", b"top".to_vec()).await.unwrap();
    assert_eq!(&location.get("a/b.txt").await.unwrap()[..], b"hello");
    assert_eq!(location.size("top.txt").await.unwrap(), 3);
    assert_eq!(location.list_names().await.unwrap(), vec!["top.txt".to_string()]);
    assert_eq!(location.list_dirs().await.unwrap(), vec!["a".to_string()]);
    assert_eq!(&location.join("a").get("b.txt").await.unwrap()[..], b"hello");
    location.delete("top.txt").await.unwrap();
    location.delete("top.txt").await.unwrap(); // deleting twice is fine
    assert!(location.list_names().await.unwrap().is_empty());
    let err = location.get("top.txt").await.unwrap_err().to_string();
    assert!(err.contains("top.txt"), "{err}");
}

async fn round_trip(url: &str) {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 16, Dialect::Official);
    let summary = pack_celeba(dir.path(), url, &small_options()).await;
    let dataset = Dataset::open(url).await.unwrap();
    assert_eq!(dataset.manifest(), &summary.manifest);
    let rows = read_all(url, None, None).await;
    assert_eq!(rows.len(), 16);
}

#[tokio::test]
async fn memory_store() {
    let url = memory_url("suite");
    location_suite(&url).await;
    round_trip(&memory_url("suite-pack")).await;
}

#[tokio::test]
async fn local_path_and_file_url() {
    let dir = tempfile::tempdir().unwrap();
    location_suite(dir.path().join("plain").to_str().unwrap()).await;
    location_suite(&format!("file://{}", dir.path().join("url").display())).await;
    round_trip(dir.path().join("pack").to_str().unwrap()).await;
}

#[tokio::test]
async fn s3_compatible_server() {
    let Ok(bucket) = std::env::var("GANTRY_TEST_S3") else {
        assert!(
            std::env::var("GANTRY_REQUIRE_S3").is_err(),
            "GANTRY_REQUIRE_S3 is set but GANTRY_TEST_S3 is not: tests/run.sh starts the S3 server"
        );
        eprintln!("skipped: set GANTRY_TEST_S3=s3://bucket (tests/run.sh does) to test against an S3 API");
        return;
    };
    let prefix = format!("{bucket}/run-{}", std::process::id());
    location_suite(&format!("{prefix}/suite")).await;
    round_trip(&format!("{prefix}/pack")).await;
}

//! Round trips for every input kind.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use base::Location;
use dataprep::Dataset;
use dataprep::celeba::{ATTRIBUTES, Dialect};
use dataprep::imaging::{Crop, Recipe};
use dataprep::manifest::{Encoding, Split};
use dataprep::pack::{PackOptions, pack};

use crate::util::*;

#[tokio::test]
async fn celeba_official_round_trip_matches_annotations_and_pixels() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 48, Dialect::Official);
    let url = memory_url("official");
    let summary = pack_celeba(dir.path(), &url, &small_options()).await;
    let m = &summary.manifest;
    assert_eq!(m.rows, 48);
    assert_eq!(m.skipped_count, 0);
    assert_eq!(m.source.dialect.as_deref(), Some("official"));
    assert_eq!(m.attributes, ATTRIBUTES.map(str::to_string).to_vec());
    assert!(m.shards.len() > 2, "small shards expected, got {}", m.shards.len());
    assert!(m.shards.iter().all(|s| s.row_groups.iter().all(|&r| r <= 4)));
    assert_eq!((m.image.height, m.image.width, m.image.channels), (32, 32, 3));

    // Splits follow list_eval_partition.txt.
    let partition = std::fs::read_to_string(dir.path().join("list_eval_partition.txt")).unwrap();
    let mut expected_splits: HashMap<Split, u64> = HashMap::new();
    for line in partition.lines() {
        let split = match line.split_whitespace().nth(1).unwrap() {
            "0" => Split::Train,
            "1" => Split::Valid,
            _ => Split::Test,
        };
        *expected_splits.entry(split).or_default() += 1;
    }
    for split in Split::ALL {
        assert_eq!(m.split_rows(split), expected_splits[&split], "{split}");
    }

    // Attribute values and counts match the annotation file.
    let annotations: HashMap<String, Vec<bool>> = official_attributes(dir.path()).into_iter().collect();
    let rows = read_all(&url, None, Some("Blond_Hair")).await;
    assert_eq!(rows.len(), 48);
    let blond = ATTRIBUTES.iter().position(|a| *a == "Blond_Hair").unwrap();
    for (id, _, attributes, class) in &rows {
        assert_eq!(&annotations[id], attributes, "{id}");
        assert_eq!(*class, i64::from(attributes[blond]), "{id}");
    }
    let blond_total: u64 = m.splits.values().map(|s| s.attributes["Blond_Hair"].yes).sum();
    assert_eq!(blond_total, annotations.values().filter(|v| v[blond]).count() as u64);

    // Pixels are exactly the recipe applied to the source JPEG.
    let (id, pixels, _, _) = &rows[5];
    let image =
        dataprep::imaging::decode(&std::fs::read(dir.path().join("img_align_celeba").join(id)).unwrap()).unwrap();
    let expected = Recipe::square(Crop::Center, 32, 3)
        .apply(image, &mut fast_resizer())
        .unwrap();
    assert_eq!(pixels, &expected);

    // The checksums in the manifest are those of the stored files.
    let location = Location::parse(&url).unwrap();
    for shard in &m.shards {
        let bytes = location.get(&shard.file).await.unwrap();
        assert_eq!(bytes.len() as u64, shard.bytes);
        assert_eq!(sha256_hex(&bytes), shard.sha256);
    }
}

fn fast_resizer() -> fast_image_resize::Resizer {
    fast_image_resize::Resizer::new()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn celeba_kaggle_layout_is_detected_and_packs_to_a_local_path() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("kaggle");
    synth(&input, 30, Dialect::Kaggle);
    assert!(input.join("img_align_celeba/img_align_celeba/000001.jpg").is_file());
    let out = dir.path().join("packed");
    let summary = pack_celeba(&input, out.to_str().unwrap(), &small_options()).await;
    assert_eq!(summary.manifest.source.dialect.as_deref(), Some("kaggle"));
    assert_eq!(summary.manifest.rows, 30);
    assert!(out.join("manifest.json").is_file());
    assert!(out.join("shard-00000.parquet").is_file());
    // Same images, same seed: the Kaggle pack reads back the same pixels as an official pack.
    let official = dir.path().join("official");
    synth(&official, 30, Dialect::Official);
    let official_url = memory_url("official-vs-kaggle");
    pack_celeba(&official, &official_url, &small_options()).await;
    let a = read_all(out.to_str().unwrap(), None, None).await;
    let b = read_all(&official_url, None, None).await;
    assert_eq!(a, b);
    // And through a file:// URL.
    let file_url = format!("file://{}", out.display());
    assert_eq!(read_all(&file_url, None, None).await, a);
}

#[tokio::test]
async fn png_encoding_reads_back_identical_pixels() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 12, Dialect::Official);
    let raw_url = memory_url("raw");
    let png_url = memory_url("png");
    pack_celeba(dir.path(), &raw_url, &small_options()).await;
    let png = pack_celeba(
        dir.path(),
        &png_url,
        &PackOptions {
            encoding: Encoding::Png,
            ..small_options()
        },
    )
    .await;
    assert_eq!(png.manifest.image.encoding, Encoding::Png);
    assert_eq!(
        read_all(&raw_url, None, None).await,
        read_all(&png_url, None, None).await
    );
}

/// Writes an IDX file (gzipped when `gz`).
pub(crate) fn write_idx(path: &Path, magic: u32, dims: &[u32], data: &[u8], gz: bool) {
    let mut bytes = magic.to_be_bytes().to_vec();
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let bytes = if gz {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(&bytes).unwrap();
        encoder.finish().unwrap()
    } else {
        bytes
    };
    std::fs::write(path, bytes).unwrap();
}

/// Image i of the fixture: a value pattern that encodes i and its label.
fn mnist_image(i: usize) -> Vec<u8> {
    (0..784).map(|p| ((i * 31 + p * 7) % 251) as u8).collect()
}

pub(crate) fn write_fashion_mnist(dir: &Path, train: usize, test: usize) {
    for (prefix, count, gz) in [("train", train, true), ("t10k", test, false)] {
        let images: Vec<u8> = (0..count).flat_map(mnist_image).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        let suffix = if gz { ".gz" } else { "" };
        write_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte{suffix}")),
            0x803,
            &[count as u32, 28, 28],
            &images,
            gz,
        );
        write_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte{suffix}")),
            0x801,
            &[count as u32],
            &labels,
            gz,
        );
    }
}

#[tokio::test]
async fn fashion_mnist_idx_files_pack_padded_to_32_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    write_fashion_mnist(dir.path(), 25, 15);
    let source = dataprep::fashion_mnist::scan(dir.path()).unwrap();
    let url = memory_url("fmnist");
    let recipe = Recipe {
        pad: 2,
        ..Recipe::square(Crop::None, 28, 1)
    };
    let summary = pack(source, recipe, &Location::parse(&url).unwrap(), &small_options())
        .await
        .unwrap();
    let m = &summary.manifest;
    assert_eq!((m.image.height, m.image.width, m.image.channels), (32, 32, 1));
    assert_eq!(m.classes.len(), 10);
    assert_eq!(m.classes[0], "T-shirt/top");
    assert_eq!(m.classes[9], "Ankle boot");
    assert_eq!(m.split_rows(Split::Train), 25);
    assert_eq!(m.split_rows(Split::Test), 15);
    assert_eq!(m.splits[&Split::Train].classes[0], 3); // records 0, 10, 20

    let rows = read_all(&url, Some(Split::Train), Some("label")).await;
    assert_eq!(rows.len(), 25);
    for (id, pixels, _, class) in rows {
        let i: usize = id.rsplit('#').next().unwrap().parse().unwrap();
        assert_eq!(class, (i % 10) as i64);
        let original = mnist_image(i);
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let expected = if inside { original[(y - 2) * 28 + (x - 2)] } else { 0 };
                assert_eq!(pixels[y * 32 + x], expected, "record {i} pixel ({x},{y})");
            }
        }
    }
}

#[tokio::test]
async fn image_folder_classes_come_from_folder_names() {
    let dir = tempfile::tempdir().unwrap();
    let colours = [
        ("cats", [200u8, 30, 30]),
        ("dogs", [30, 200, 30]),
        ("owls", [30, 30, 200]),
    ];
    for (class, rgb) in colours {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        for i in 0..5 {
            let image = image::RgbImage::from_pixel(40 + i, 30, image::Rgb(rgb));
            image.save(dir.path().join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(dir.path().join("dogs/notes.txt"), "not an image").unwrap();
    let source = dataprep::folder::scan(dir.path()).unwrap();
    let url = memory_url("folder");
    let summary = pack(
        source,
        Recipe::square(Crop::Center, 16, 3),
        &Location::parse(&url).unwrap(),
        &small_options(),
    )
    .await
    .unwrap();
    let m = &summary.manifest;
    assert_eq!(m.classes, vec!["cats", "dogs", "owls"]);
    assert_eq!(m.rows, 15);
    assert_eq!(m.skipped_count, 1);
    assert_eq!(m.skipped[0].id, "dogs/notes.txt");
    let rows = read_all(&url, None, Some("label")).await;
    assert_eq!(rows.len(), 15);
    for (id, pixels, _, class) in rows {
        let rgb = colours[class as usize].1;
        assert!(id.starts_with(colours[class as usize].0), "{id} in class {class}");
        assert!(
            pixels.chunks(3).all(|p| p == rgb),
            "{id}: a flat colour image stays flat"
        );
    }
    // Grayscale option.
    let source = dataprep::folder::scan(dir.path()).unwrap();
    let gray_url = memory_url("folder-gray");
    let summary = pack(
        source,
        Recipe::square(Crop::None, 8, 1),
        &Location::parse(&gray_url).unwrap(),
        &small_options(),
    )
    .await
    .unwrap();
    assert_eq!(summary.manifest.image.channels, 1);
    assert_eq!(Dataset::open(&gray_url).await.unwrap().manifest().image.bytes(), 64);
}

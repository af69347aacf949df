//! The streaming reader: deterministic shuffle, rank partitions, exact resume.

use std::collections::HashSet;

use dataprep::celeba::Dialect;
use dataprep::{Batch, Dataset, Loader, LoaderOptions, Position, Split};

use crate::util::*;

async fn dataset(count: usize) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), count, Dialect::Official);
    let url = memory_url("reader");
    pack_celeba(dir.path(), &url, &small_options()).await;
    (dir, Dataset::open(&url).await.unwrap())
}

fn options(batch_size: usize, rank: usize, world_size: usize) -> LoaderOptions {
    LoaderOptions {
        split: Some(Split::Train),
        batch_size,
        seed: 42,
        shuffle_window: 8,
        rank,
        world_size,
        condition: Some("Blond_Hair".parse().unwrap()),
        ..LoaderOptions::default()
    }
}

async fn collect(loader: &Loader, from: Position, batches: usize) -> Vec<Batch> {
    let mut stream = loader.stream(from);
    let mut out = Vec::new();
    for _ in 0..batches {
        out.push(stream.next().await.unwrap().unwrap());
    }
    out
}

#[tokio::test]
async fn shuffle_is_deterministic_per_seed_and_epoch() {
    let (_dir, dataset) = dataset(60).await;
    let loader = dataset.loader(options(1, 0, 1)).unwrap();
    let a = loader.epoch_ids(0).await.unwrap();
    let b = loader.epoch_ids(0).await.unwrap();
    assert_eq!(a, b, "same seed and epoch, same order");
    let train = dataset.manifest().split_rows(Split::Train) as usize;
    assert_eq!(a.len(), train);
    assert_eq!(
        a.iter().collect::<HashSet<_>>().len(),
        train,
        "an epoch visits every row once"
    );

    let next_epoch = loader.epoch_ids(1).await.unwrap();
    assert_ne!(a, next_epoch, "epochs are reshuffled");
    assert_eq!(
        a.iter().collect::<HashSet<_>>(),
        next_epoch.iter().collect::<HashSet<_>>()
    );

    let other_seed = dataset
        .loader(LoaderOptions {
            seed: 43,
            ..options(1, 0, 1)
        })
        .unwrap();
    assert_ne!(a, other_seed.epoch_ids(0).await.unwrap(), "seeds change the order");

    let mut sorted = a.clone();
    sorted.sort();
    assert_ne!(a, sorted, "rows are actually shuffled");

    let unshuffled = dataset
        .loader(LoaderOptions {
            shuffle: false,
            ..options(1, 0, 1)
        })
        .unwrap();
    let plain = unshuffled.epoch_ids(0).await.unwrap();
    assert_eq!(plain, sorted, "without shuffling, storage order (which is file order)");
}

#[tokio::test]
async fn ranks_get_disjoint_equal_shares_that_cover_the_epoch() {
    let (_dir, dataset) = dataset(70).await;
    let train = dataset.manifest().split_rows(Split::Train) as usize;
    for world in [2usize, 3, 4] {
        for epoch in [0u64, 1] {
            let mut union = HashSet::new();
            let mut sizes = Vec::new();
            for rank in 0..world {
                let ids = dataset
                    .loader(options(1, rank, world))
                    .unwrap()
                    .epoch_ids(epoch)
                    .await
                    .unwrap();
                sizes.push(ids.len());
                for id in ids {
                    assert!(
                        union.insert(id.clone()),
                        "world {world} epoch {epoch}: {id} on two ranks"
                    );
                }
            }
            assert!(
                sizes.iter().all(|&s| s == train / world),
                "world {world}: shares {sizes:?}"
            );
            assert_eq!(union.len(), train / world * world);
            assert!(train - union.len() < world, "at most world-1 rows are dropped");
        }
    }
}

#[tokio::test]
async fn a_saved_position_resumes_exactly_including_across_epochs() {
    let (_dir, dataset) = dataset(70).await;
    let loader = dataset.loader(options(5, 1, 2)).unwrap();
    let per_epoch = loader.batches_per_epoch() as usize;
    assert!(per_epoch >= 4, "fixture too small: {per_epoch} batches per epoch");
    let total = per_epoch * 2 + 3;
    let uninterrupted = collect(&loader, Position::default(), total).await;
    assert_eq!(uninterrupted[per_epoch - 1].next, Position { epoch: 1, offset: 0 });
    assert_eq!(uninterrupted[per_epoch].epoch, 1);
    for stop in [1, per_epoch - 1, per_epoch, per_epoch + 2] {
        let position = uninterrupted[stop - 1].next;
        // A fresh loader, as after a restart.
        let resumed_loader = Dataset::open(dataset.location().url())
            .await
            .unwrap()
            .loader(options(5, 1, 2))
            .unwrap();
        let resumed = collect(&resumed_loader, position, total - stop).await;
        for (a, b) in uninterrupted[stop..].iter().zip(&resumed) {
            assert_eq!(a.ids, b.ids, "resumed after batch {stop}");
            assert_eq!(a.pixels, b.pixels);
            assert_eq!(a.classes, b.classes);
            assert_eq!(a.next, b.next);
        }
    }
}

#[tokio::test]
async fn batches_carry_classes_pixels_and_attributes_consistently() {
    let (_dir, dataset) = dataset(40).await;
    let m = dataset.manifest().clone();
    let blond = m.attribute_index("Blond_Hair").unwrap();
    let male = m.attribute_index("Male").unwrap();
    let loader = dataset
        .loader(LoaderOptions {
            condition: Some("Blond_Hair,Male".parse().unwrap()),
            ..options(4, 0, 1)
        })
        .unwrap();
    let names = &loader.classes().unwrap().names;
    assert_eq!(
        names,
        &[
            "-Blond_Hair -Male",
            "+Blond_Hair -Male",
            "-Blond_Hair +Male",
            "+Blond_Hair +Male"
        ]
    );
    let batch = collect(&loader, Position::default(), 1).await.remove(0);
    assert_eq!(batch.len, 4);
    assert_eq!(batch.pixels.len(), 4 * 32 * 32 * 3);
    for i in 0..4 {
        let row = &batch.attributes[i * 40..(i + 1) * 40];
        assert_eq!(batch.classes[i], i64::from(row[blond]) + 2 * i64::from(row[male]));
    }
}

#[tokio::test]
async fn impossible_options_and_conditions_are_rejected_up_front() {
    let (_dir, dataset) = dataset(20).await;
    let err = dataset.loader(options(1000, 0, 1)).unwrap_err().to_string();
    assert!(err.contains("less than one batch of 1000"), "{err}");
    let err = dataset.loader(options(1, 2, 2)).unwrap_err().to_string();
    assert!(err.contains("rank 2 is not below world_size 2"), "{err}");
    let err = dataset
        .loader(LoaderOptions {
            condition: Some("Purple_Hair".parse().unwrap()),
            ..options(1, 0, 1)
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown attribute \"Purple_Hair\"") && err.contains("Blond_Hair"),
        "{err}"
    );
    let err = dataset
        .loader(LoaderOptions {
            condition: Some("label".parse().unwrap()),
            ..options(1, 0, 1)
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("no label column"), "{err}");
}

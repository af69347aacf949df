//! Conditioning works: after a short CPU run on synthetic CelebA (Blond_Hair visible as hair
//! colour), a linear classifier fitted on the real packed images recognises the requested class
//! in generated images far above chance, also when only the label changes for a fixed latent.

use dataprep::{Dataset, LoaderOptions, Split};
use tch::{Device, Kind, Tensor};
use worker::checkpoint;
use worker::train::{TrainOptions, train};

use crate::util::*;

/// The head region of a 32x32 centre-cropped image, where the hair colour shows.
const ROWS: std::ops::Range<i64> = 2..12;
const COLS: std::ops::Range<i64> = 8..24;

/// Features: the head region's pixels in [-1, 1], plus a bias column. `[n, 3, 32, 32]` -> `[n, d]`.
fn features(images: &Tensor) -> Tensor {
    let n = images.size()[0];
    let region = images
        .narrow(2, ROWS.start, ROWS.end - ROWS.start)
        .narrow(3, COLS.start, COLS.end - COLS.start)
        .reshape([n, -1]);
    Tensor::cat(&[region, Tensor::ones([n, 1], (Kind::Float, Device::Cpu))], 1)
}

/// Real images of a split with their Blond_Hair class.
fn real(data: &str, split: Split) -> (Tensor, Tensor) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dataset = Dataset::open(data).await.unwrap();
        let rows = dataset.manifest().split_rows(split) as usize;
        let loader = dataset
            .loader(LoaderOptions {
                split: Some(split),
                batch_size: rows,
                shuffle: false,
                condition: Some("Blond_Hair".parse().unwrap()),
                ..LoaderOptions::default()
            })
            .unwrap();
        let batch = loader.epoch(0, 0).next().await.unwrap().unwrap();
        let images = worker::train::images_to_tensor(&batch.pixels, rows as i64, 32, 3, Device::Cpu);
        (images, Tensor::from_slice(&batch.classes))
    })
}

/// Ridge regression to targets -1/+1: the simplest classifier that reads colour in a region.
fn fit(x: &Tensor, classes: &Tensor) -> Tensor {
    let y = (classes.to_kind(Kind::Float) * 2.0 - 1.0).unsqueeze(1);
    let d = x.size()[1];
    let gram = x.transpose(0, 1).matmul(x) + Tensor::eye(d, (Kind::Float, Device::Cpu)) * 1.0;
    Tensor::linalg_solve(&gram, &x.transpose(0, 1).matmul(&y), true)
}

fn predict(w: &Tensor, images: &Tensor) -> Tensor {
    features(images).matmul(w).squeeze_dim(1).gt(0.0).to_kind(Kind::Int64)
}

fn accuracy(predicted: &Tensor, wanted: &Tensor) -> f64 {
    predicted
        .eq_tensor(wanted)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

#[test]
fn generated_images_obey_the_requested_class() {
    let _serial = crate::util::exclusive();
    let dir = tempfile::tempdir().unwrap();
    let data = packed_celeba(dir.path(), 1200, 21);
    let out = dir.path().join("out");
    let mut job = small_job(&data, &out);
    job.model.width = 32;
    job.model.z_dim = 32;
    job.train.batch_size = 32;
    job.train.steps = 800;
    job.train.lr = 2e-4;
    job.train.checkpoint_every = 0;
    job.train.sample_every = 0;
    job.train.sample_rows = 8;
    worker::keep_freed_memory();
    let started = std::time::Instant::now();
    let summary = train(&job, &TrainOptions::default(), crate::util::io()).unwrap();
    let seconds = started.elapsed().as_secs_f64();

    // The classifier: fitted on real training images, checked on real held-out images.
    let (train_images, train_classes) = real(&data, Split::Train);
    let w = fit(&features(&train_images), &train_classes);
    let (valid_images, valid_classes) = real(&data, Split::Valid);
    let real_accuracy = accuracy(&predict(&w, &valid_images), &valid_classes);

    // Generated: 200 latents, each rendered as both classes.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let location = dataprep::Location::parse(out.to_str().unwrap()).unwrap();
    let folder = runtime.block_on(checkpoint::latest(&location)).unwrap().unwrap();
    let ckpt = runtime.block_on(checkpoint::load(&folder)).unwrap();
    let mut gan = worker::train::build_gan(&job, 3, 2, Device::Cpu);
    gan.load_generator(&ckpt.generator).unwrap();
    tch::manual_seed(1234);
    let n = 200;
    let z = Tensor::randn([n, 32], (Kind::Float, Device::Cpu));
    let mut predictions = Vec::new();
    for class in [0i64, 1] {
        let wanted = Tensor::full([n], class, (Kind::Int64, Device::Cpu));
        predictions.push(predict(&w, &gan.generate(&z, &wanted)));
    }
    let not_blond = accuracy(&predictions[0], &Tensor::zeros([n], (Kind::Int64, Device::Cpu)));
    let blond = accuracy(&predictions[1], &Tensor::ones([n], (Kind::Int64, Device::Cpu)));
    let conditional = (not_blond + blond) / 2.0;
    let swapped = (predictions[0].eq(0).logical_and(&predictions[1].eq(1)))
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    println!(
        "quality: {} steps in {seconds:.0}s ({:.0} images/s); classifier accuracy on real valid images {:.3}; \
         conditional accuracy on generated {:.3} (not blond {:.3}, blond {:.3}; chance 0.5); \
         same-z label swap both correct {:.3} (chance 0.25)",
        summary.steps, summary.images_per_sec, real_accuracy, conditional, not_blond, blond, swapped
    );
    assert!(
        real_accuracy > 0.9,
        "the classifier itself must work on real images: {real_accuracy}"
    );
    assert!(conditional > 0.9, "conditional accuracy {conditional}");
    assert!(swapped > 0.8, "label swap {swapped}");
}

//! Reading a dataset's splits for evaluation: [`held_out_split`] (valid, else test),
//! [`scan_split`] (a split's images in chunks, as tensors in [-1, 1]) and [`read_split`] (all of
//! them at once), and [`invalid`], the error of a dataset or request evaluation cannot use.

use dataprep::{Condition, Dataset, LoaderOptions, Split};
use tch::{Device, Kind, Tensor};
use tokio::runtime::Handle;

use crate::pixels::images_to_tensor;
use crate::{Error, Result};

/// Images per forward pass of the generator and the classifier.
pub(super) const CHUNK: usize = 256;

/// The split scored for the ceiling: valid when the dataset has it, else test; an error naming
/// the dataset when it has neither.
pub fn held_out_split(dataset: &Dataset) -> Result<Split> {
    let manifest = dataset.manifest();
    [Split::Valid, Split::Test]
        .into_iter()
        .find(|&s| manifest.split_rows(s) > 0)
        .ok_or_else(|| {
            invalid(format!(
                "the dataset at {} has no held-out images (its valid and test splits are empty): evaluation scores its \
             classifier there and compares generated images with them; repack it with a partition, or set \
             train.eval_every = 0",
                dataset.location().url()
            ))
        })
}

/// The error of a dataset or a request evaluation cannot use: an invalid job.
pub(super) fn invalid(problem: String) -> Error {
    gantry_job::JobError::Invalid {
        problems: vec![problem],
    }
    .into()
}

/// Calls `f` on the images of `split` in chunks (`[n, c, h, w]` in [-1, 1] on the CPU, and their
/// classes), in storage order.
pub(super) fn scan_split(
    dataset: &Dataset,
    condition: &Condition,
    split: Split,
    runtime: &Handle,
    mut f: impl FnMut(&Tensor, &[i64]),
) -> Result<()> {
    let rows = dataset.manifest().split_rows(split) as usize;
    if rows == 0 {
        return Ok(());
    }
    let loader = dataset.loader(LoaderOptions {
        split: Some(split),
        batch_size: rows,
        shuffle: false,
        prefetch: 1,
        condition: Some(condition.clone()),
        ..LoaderOptions::default()
    })?;
    let mut stream = {
        let _guard = runtime.enter();
        loader.epoch(0, 0)
    };
    let image = &dataset.manifest().image;
    let (size, channels, bytes) = (i64::from(image.height), i64::from(image.channels), image.bytes());
    while let Some(batch) = stream.blocking_next() {
        let batch = batch?;
        for start in (0..batch.len).step_by(CHUNK) {
            let len = (batch.len - start).min(CHUNK);
            let pixels = &batch.pixels[start * bytes..(start + len) * bytes];
            let x = images_to_tensor(pixels, len as i64, size, channels, Device::Cpu);
            f(&x, &batch.classes[start..start + len]);
        }
    }
    Ok(())
}

/// All images of `split` (`[n, c, h, w]` in [-1, 1] on the CPU) with their classes under
/// `condition`, in storage order.
pub fn read_split(
    dataset: &Dataset,
    condition: &Condition,
    split: Split,
    runtime: &Handle,
) -> Result<(Tensor, Vec<i64>)> {
    let (mut images, mut classes) = (Vec::new(), Vec::new());
    scan_split(dataset, condition, split, runtime, |x, c| {
        images.push(x.shallow_clone());
        classes.extend_from_slice(c);
    })?;
    let image = &dataset.manifest().image;
    let images = if images.is_empty() {
        Tensor::zeros(
            [
                0,
                i64::from(image.channels),
                i64::from(image.height),
                i64::from(image.width),
            ],
            (Kind::Float, Device::Cpu),
        )
    } else {
        Tensor::cat(&images, 0)
    };
    Ok((images, classes))
}

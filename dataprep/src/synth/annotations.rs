//! CelebA's annotation files and splits: `list_attr_celeba` and `list_eval_partition` in the
//! official (`.txt`) and Kaggle (`.csv`) dialects.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::celeba::{ATTRIBUTES, Dialect};
use crate::{Error, Result};

/// Real CelebA: 202599 images, 162770 train, 19867 valid, 19962 test.
const CELEBA_IMAGES: u128 = 202_599;
const CELEBA_TRAIN: u128 = 162_770;
const CELEBA_VALID: u128 = 19_867;

/// File name of image `index` (0-based): CelebA numbers its images from `000001.jpg`.
pub(super) fn image_name(index: usize) -> String {
    format!("{:06}.jpg", index + 1)
}

/// (train, valid, test) image counts for `count` images, in CelebA's proportions.
pub(super) fn split_sizes(count: usize) -> (usize, usize, usize) {
    let share = |part: u128| ((count as u128 * part + CELEBA_IMAGES / 2) / CELEBA_IMAGES) as usize;
    let mut train = share(CELEBA_TRAIN).min(count);
    let mut valid = share(CELEBA_VALID).min(count - train);
    if count >= 3 {
        valid = valid.max(1);
        train = train.clamp(1, count - valid - 1);
    }
    (train, valid, count - train - valid)
}

/// The two annotation files, built in memory while the images are written and committed after
/// them (26 MB for CelebA's full 202599 images).
pub(super) struct Annotations {
    dialect: Dialect,
    attrs: String,
    partition: String,
}

impl Annotations {
    /// Removes the annotation files of `dialect` that an earlier run left in `output`, the
    /// attribute file first: from then on the folder is not a CelebA folder until [`Self::commit`].
    pub(super) fn uncommit(output: &Path, dialect: Dialect) -> Result<()> {
        for name in [dialect.attribute_file(), dialect.partition_file()] {
            let path = output.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => return Err(Error::io(&path, e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Empty files (headers only) for `count` images.
    pub(super) fn new(dialect: Dialect, count: usize) -> Self {
        let (attrs, partition) = match dialect {
            // The real file has a trailing space after the last name.
            Dialect::Official => (format!("{count}\n{} \n", ATTRIBUTES.join(" ")), String::new()),
            Dialect::Kaggle => (
                format!("image_id,{}\n", ATTRIBUTES.join(",")),
                "image_id,partition\n".to_owned(),
            ),
        };
        Annotations {
            dialect,
            attrs,
            partition,
        }
    }

    /// Adds image `name` with its attributes and partition (0 train, 1 valid, 2 test).
    pub(super) fn row(&mut self, name: &str, attrs: &[bool; 40], partition: u8) {
        self.attrs.push_str(name);
        for &value in attrs {
            self.attrs.push_str(match (self.dialect, value) {
                // The official file lines values up: two spaces before `1`, one before `-1`.
                (Dialect::Official, true) => "  1",
                (Dialect::Official, false) => " -1",
                (Dialect::Kaggle, true) => ",1",
                (Dialect::Kaggle, false) => ",-1",
            });
        }
        self.attrs.push('\n');
        let separator = match self.dialect {
            Dialect::Official => ' ',
            Dialect::Kaggle => ',',
        };
        self.partition.push_str(&format!("{name}{separator}{partition}\n"));
    }

    /// Writes the partition file, then the attribute file (whose presence makes `output` a CelebA
    /// folder), each atomically.
    pub(super) fn commit(self, output: &Path) -> Result<()> {
        write_atomically(&output.join(self.dialect.partition_file()), &self.partition)?;
        write_atomically(&output.join(self.dialect.attribute_file()), &self.attrs)
    }
}

/// Writes `text` to `path` under a temporary name in the same folder, then renames it into place:
/// `path` never exists with part of `text`.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    fs::write(&partial, text).map_err(|e| Error::io(&partial, e))?;
    fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::split_sizes;

    #[test]
    fn splits_follow_celeba() {
        assert_eq!(split_sizes(202_599), (162_770, 19_867, 19_962));
        assert_eq!(split_sizes(0), (0, 0, 0));
        assert_eq!(split_sizes(1), (1, 0, 0));
        for count in 3..=500 {
            let (train, valid, test) = split_sizes(count);
            assert_eq!(train + valid + test, count);
            assert!(train >= 1 && valid >= 1 && test >= 1, "{count}: {train} {valid} {test}");
            assert!(train >= valid && train >= test);
        }
    }
}

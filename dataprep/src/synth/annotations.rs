//! CelebA's annotation files and splits: `list_attr_celeba` and `list_eval_partition` in the
//! official (`.txt`) and Kaggle (`.csv`) dialects.

use std::fs::File;
use std::io::{BufWriter, Write};
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

/// The two annotation files, written row by row.
pub(super) struct Annotations {
    dialect: Dialect,
    attrs: BufWriter<File>,
    attrs_path: PathBuf,
    partition: BufWriter<File>,
    partition_path: PathBuf,
}

impl Annotations {
    pub(super) fn create(output: &Path, dialect: Dialect, count: usize) -> Result<Self> {
        let open = |path: &Path| File::create(path).map(BufWriter::new).map_err(|e| Error::io(path, e));
        let attrs_path = output.join(dialect.attribute_file());
        let partition_path = output.join(dialect.partition_file());
        let mut notes = Annotations {
            dialect,
            attrs: open(&attrs_path)?,
            attrs_path,
            partition: open(&partition_path)?,
            partition_path,
        };
        let (attrs_header, partition_header) = match dialect {
            // The real file has a trailing space after the last name.
            Dialect::Official => (format!("{count}\n{} \n", ATTRIBUTES.join(" ")), String::new()),
            Dialect::Kaggle => (
                format!("image_id,{}\n", ATTRIBUTES.join(",")),
                "image_id,partition\n".to_owned(),
            ),
        };
        notes.write(&attrs_header, &partition_header)?;
        Ok(notes)
    }

    pub(super) fn row(&mut self, name: &str, attrs: &[bool; 40], partition: u8) -> Result<()> {
        let mut line = String::with_capacity(name.len() + 3 * attrs.len() + 1);
        line.push_str(name);
        for &value in attrs {
            line.push_str(match (self.dialect, value) {
                // The official file lines values up: two spaces before `1`, one before `-1`.
                (Dialect::Official, true) => "  1",
                (Dialect::Official, false) => " -1",
                (Dialect::Kaggle, true) => ",1",
                (Dialect::Kaggle, false) => ",-1",
            });
        }
        line.push('\n');
        let separator = match self.dialect {
            Dialect::Official => ' ',
            Dialect::Kaggle => ',',
        };
        self.write(&line, &format!("{name}{separator}{partition}\n"))
    }

    fn write(&mut self, attrs: &str, partition: &str) -> Result<()> {
        self.attrs
            .write_all(attrs.as_bytes())
            .map_err(|e| Error::io(&self.attrs_path, e))?;
        self.partition
            .write_all(partition.as_bytes())
            .map_err(|e| Error::io(&self.partition_path, e))
    }

    pub(super) fn finish(mut self) -> Result<()> {
        self.attrs.flush().map_err(|e| Error::io(&self.attrs_path, e))?;
        self.partition.flush().map_err(|e| Error::io(&self.partition_path, e))
    }
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

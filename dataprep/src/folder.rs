//! An image-folder tree: one sub-folder per class, class names from folder names.

use std::path::Path;

use crate::manifest::{Skipped, Split};
use crate::source::{Input, Sample, Source, is_image_file, read_dir_sorted};
use crate::{Error, Result};

/// Scans `input/<class>/<image>`; classes are the sub-folders in name order. Files that are not
/// JPEG or PNG are skipped with a reason; hidden entries are ignored.
pub fn scan(input: &Path) -> Result<Source> {
    let hidden = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
    };
    let class_dirs: Vec<_> = read_dir_sorted(input)?
        .into_iter()
        .filter(|p| p.is_dir() && !hidden(p))
        .collect();
    if class_dirs.is_empty() {
        return Err(Error::Input {
            path: input.to_path_buf(),
            message: "no class sub-folders (expected INPUT/<class>/<image files>)".into(),
        });
    }
    let mut classes = Vec::new();
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for (label, dir) in class_dirs.iter().enumerate() {
        let class = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        for path in read_dir_sorted(dir)?.into_iter().filter(|p| !hidden(p)) {
            let id = format!(
                "{class}/{}",
                path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            );
            if !path.is_file() {
                skipped.push(Skipped {
                    id,
                    reason: "not a file (nested folders are not classes)".into(),
                });
            } else if !is_image_file(&path) {
                skipped.push(Skipped {
                    id,
                    reason: "not a .jpg, .jpeg or .png file".into(),
                });
            } else {
                samples.push(Sample {
                    id,
                    split: Split::Train,
                    label: Some(label as u32),
                    attributes: Vec::new(),
                    input: Input::File(path),
                });
            }
        }
        classes.push(class);
    }
    Ok(Source {
        kind: "folder",
        dialect: None,
        input: input.to_path_buf(),
        attributes: Vec::new(),
        classes,
        samples,
        skipped,
    })
}

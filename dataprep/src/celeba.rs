//! CelebA's on-disk layout: attribute and partition files in the official (`.txt`) and Kaggle
//! (`.csv`) dialects, and the folder of aligned JPEGs.

/// The 40 binary attributes of CelebA, in the order of `list_attr_celeba.txt`.
pub const ATTRIBUTES: [&str; 40] = [
    "5_o_Clock_Shadow",
    "Arched_Eyebrows",
    "Attractive",
    "Bags_Under_Eyes",
    "Bald",
    "Bangs",
    "Big_Lips",
    "Big_Nose",
    "Black_Hair",
    "Blond_Hair",
    "Blurry",
    "Brown_Hair",
    "Bushy_Eyebrows",
    "Chubby",
    "Double_Chin",
    "Eyeglasses",
    "Goatee",
    "Gray_Hair",
    "Heavy_Makeup",
    "High_Cheekbones",
    "Male",
    "Mouth_Slightly_Open",
    "Mustache",
    "Narrow_Eyes",
    "No_Beard",
    "Oval_Face",
    "Pale_Skin",
    "Pointy_Nose",
    "Receding_Hairline",
    "Rosy_Cheeks",
    "Sideburns",
    "Smiling",
    "Straight_Hair",
    "Wavy_Hair",
    "Wearing_Earrings",
    "Wearing_Hat",
    "Wearing_Lipstick",
    "Wearing_Necklace",
    "Wearing_Necktie",
    "Young",
];

/// Width of CelebA's aligned images.
pub const WIDTH: u32 = 178;
/// Height of CelebA's aligned images.
pub const HEIGHT: u32 = 218;

/// Which of CelebA's two distributed layouts a folder uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// `list_attr_celeba.txt` (count line, names line, space-separated rows of -1/1),
    /// `list_eval_partition.txt`, images in `img_align_celeba/`.
    Official,
    /// `list_attr_celeba.csv` / `list_eval_partition.csv` with an `image_id` header, images in
    /// `img_align_celeba/` or one folder deeper (`img_align_celeba/img_align_celeba/`).
    Kaggle,
}

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::manifest::{Skipped, Split};
use crate::source::{Input, Sample, Source, is_image_file, read_dir_sorted};
use crate::{Error, Result};

impl Dialect {
    /// The attribute file's name in this dialect.
    pub fn attribute_file(self) -> &'static str {
        match self {
            Dialect::Official => "list_attr_celeba.txt",
            Dialect::Kaggle => "list_attr_celeba.csv",
        }
    }

    /// The partition file's name in this dialect.
    pub fn partition_file(self) -> &'static str {
        match self {
            Dialect::Official => "list_eval_partition.txt",
            Dialect::Kaggle => "list_eval_partition.csv",
        }
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Official => "official",
            Dialect::Kaggle => "kaggle",
        }
    }

    fn fields(self, line: &str) -> Vec<&str> {
        match self {
            Dialect::Official => line.split_whitespace().collect(),
            Dialect::Kaggle => line.trim_end_matches('\r').split(',').map(str::trim).collect(),
        }
    }
}

/// Finds which dialect the folder `input` uses.
pub fn detect_dialect(input: &Path) -> Result<Dialect> {
    std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
    [Dialect::Official, Dialect::Kaggle]
        .into_iter()
        .find(|d| input.join(d.attribute_file()).is_file())
        .ok_or_else(|| Error::Input {
            path: input.to_path_buf(),
            message: "not a CelebA folder: neither list_attr_celeba.txt (official) nor list_attr_celeba.csv (Kaggle) is there".into(),
        })
}

/// The folder holding the aligned JPEGs: `img_align_celeba/`, or one level deeper as in Kaggle's archive.
pub fn image_dir(input: &Path) -> Result<PathBuf> {
    let outer = input.join("img_align_celeba");
    let nested = outer.join("img_align_celeba");
    if nested.is_dir() {
        Ok(nested)
    } else if outer.is_dir() {
        Ok(outer)
    } else {
        Err(Error::Input {
            path: input.to_path_buf(),
            message: "image folder img_align_celeba/ is missing".into(),
        })
    }
}

fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// One parsed row of the attribute file.
struct AttrRow {
    file: String,
    line: usize,
    values: Vec<bool>,
}

fn parse_attributes(path: &Path, dialect: Dialect) -> Result<(Vec<String>, Vec<AttrRow>)> {
    let lines = read_lines(path)?;
    let malformed = |line: usize, message: String| Error::malformed(path, Some(line), message);
    let (names, first_row, declared) = match dialect {
        Dialect::Official => {
            let count = lines.first().map(|l| l.trim()).unwrap_or_default();
            let declared: usize = count
                .parse()
                .map_err(|_| malformed(1, format!("expected the image count, found {count:?}")))?;
            let names = lines.get(1).map(|l| dialect.fields(l)).unwrap_or_default();
            (names, 2, Some(declared))
        }
        Dialect::Kaggle => {
            let header = lines.first().map(|l| dialect.fields(l)).unwrap_or_default();
            if header.first() != Some(&"image_id") {
                return Err(malformed(1, "expected a header starting with image_id".into()));
            }
            (header[1..].to_vec(), 1, None)
        }
    };
    if names.is_empty() {
        return Err(malformed(first_row, "no attribute names".into()));
    }
    let names: Vec<String> = names.into_iter().map(str::to_string).collect();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    for (i, text) in lines.iter().enumerate().skip(first_row) {
        let line = i + 1;
        let fields = dialect.fields(text);
        if fields.is_empty() || (fields.len() == 1 && fields[0].is_empty()) {
            continue;
        }
        let file = fields[0].to_string();
        let raw = &fields[1..];
        if raw.len() != names.len() {
            return Err(malformed(
                line,
                format!("{file}: expected {} attribute values, found {}", names.len(), raw.len()),
            ));
        }
        let values = raw
            .iter()
            .zip(&names)
            .map(|(v, name)| match *v {
                "1" => Ok(true),
                "-1" | "0" => Ok(false),
                other => Err(malformed(
                    line,
                    format!("{file}: {name} is {other:?}, expected 1 or -1"),
                )),
            })
            .collect::<Result<Vec<bool>>>()?;
        if !seen.insert(file.clone()) {
            return Err(malformed(line, format!("{file} is listed twice")));
        }
        rows.push(AttrRow { file, line, values });
    }
    if let Some(declared) = declared
        && declared != rows.len()
    {
        return Err(malformed(
            1,
            format!(
                "declares {declared} images but the file lists {} (truncated file?)",
                rows.len()
            ),
        ));
    }
    Ok((names, rows))
}

fn parse_partition(path: &Path, dialect: Dialect) -> Result<HashMap<String, Split>> {
    let lines = read_lines(path)?;
    let skip = usize::from(dialect == Dialect::Kaggle);
    let mut splits = HashMap::new();
    for (i, text) in lines.iter().enumerate().skip(skip) {
        let fields = dialect.fields(text);
        if fields.is_empty() || (fields.len() == 1 && fields[0].is_empty()) {
            continue;
        }
        let split = match fields[..] {
            [_, "0"] => Split::Train,
            [_, "1"] => Split::Valid,
            [_, "2"] => Split::Test,
            _ => {
                return Err(Error::malformed(
                    path,
                    Some(i + 1),
                    format!("expected \"<image> <0|1|2>\", found {text:?}"),
                ));
            }
        };
        splits.insert(fields[0].to_string(), split);
    }
    Ok(splits)
}

/// Scans a CelebA folder in either dialect. Structural problems (unreadable folder, malformed
/// annotation files) are errors; images that are listed but missing, or present but unlisted, are
/// returned in [`Source::skipped`].
pub fn scan(input: &Path) -> Result<Source> {
    let dialect = detect_dialect(input)?;
    let images = image_dir(input)?;
    let attr_path = input.join(dialect.attribute_file());
    let (names, rows) = parse_attributes(&attr_path, dialect)?;
    let partition_path = input.join(dialect.partition_file());
    let partition = if partition_path.is_file() {
        Some(parse_partition(&partition_path, dialect)?)
    } else {
        tracing::warn!(path = %partition_path.display(), "no partition file: every image goes to the train split");
        None
    };
    let on_disk: HashSet<String> = read_dir_sorted(&images)?
        .into_iter()
        .filter(|p| p.is_file() && is_image_file(p))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect();
    let image_rel = images.strip_prefix(input).unwrap_or(&images).display().to_string();
    let mut skipped = Vec::new();
    let mut samples = Vec::with_capacity(rows.len());
    let mut listed = HashSet::with_capacity(rows.len());
    for row in rows {
        listed.insert(row.file.clone());
        if !on_disk.contains(&row.file) {
            skipped.push(Skipped {
                reason: format!(
                    "listed in {} line {} but {image_rel}/{} does not exist",
                    dialect.attribute_file(),
                    row.line,
                    row.file
                ),
                id: row.file,
            });
            continue;
        }
        let split = match &partition {
            None => Split::Train,
            Some(map) => match map.get(&row.file) {
                Some(split) => *split,
                None => {
                    skipped.push(Skipped {
                        reason: format!("not listed in {}", dialect.partition_file()),
                        id: row.file,
                    });
                    continue;
                }
            },
        };
        samples.push(Sample {
            input: Input::File(images.join(&row.file)),
            id: row.file,
            split,
            label: None,
            attributes: row.values,
        });
    }
    let mut unlisted: Vec<&String> = on_disk.difference(&listed).collect();
    unlisted.sort();
    skipped.extend(unlisted.into_iter().map(|file| Skipped {
        id: file.clone(),
        reason: format!("{image_rel}/{file} is not listed in {}", dialect.attribute_file()),
    }));
    Ok(Source {
        kind: "celeba",
        dialect: Some(dialect.as_str().to_string()),
        input: input.to_path_buf(),
        attributes: names,
        classes: Vec::new(),
        samples,
        skipped,
    })
}

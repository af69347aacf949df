//! Conditions: which column(s) of a dataset give the class a GAN is conditioned on.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;
use crate::{Error, Result};

/// What a job conditions on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Condition {
    /// The `label` column (k classes, named in the manifest).
    Label,
    /// One or more binary attributes; n attributes make 2^n classes, attribute i being bit i of
    /// the class index (one attribute: class 0 = false, class 1 = true).
    Attributes(Vec<String>),
}

impl FromStr for Condition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "label" {
            return Ok(Condition::Label);
        }
        let names: Vec<String> = s
            .split([',', '+'])
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err(Error::Condition {
                condition: s.into(),
                message: "empty condition".into(),
            });
        }
        if names.len() > 8 {
            return Err(Error::Condition {
                condition: s.into(),
                message: format!(
                    "{} attributes would make {} classes; at most 8 attributes",
                    names.len(),
                    1u64 << names.len()
                ),
            });
        }
        Ok(Condition::Attributes(names))
    }
}

impl TryFrom<String> for Condition {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Condition> for String {
    fn from(c: Condition) -> String {
        c.to_string()
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Condition::Label => f.write_str("label"),
            Condition::Attributes(names) => f.write_str(&names.join(",")),
        }
    }
}

/// A condition checked against a dataset: how to compute each row's class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    /// Class names, indexed by class.
    pub names: Vec<String>,
    /// Attribute column indices (bit i of the class = attribute `columns[i]`); empty for `label`.
    pub columns: Vec<usize>,
}

impl Condition {
    /// Checks the condition against a dataset's manifest and names its classes.
    pub fn resolve(&self, manifest: &Manifest) -> Result<Classes> {
        let fail = |message: String| Error::Condition {
            condition: self.to_string(),
            message,
        };
        match self {
            Condition::Label => {
                if manifest.classes.is_empty() {
                    return Err(fail(format!(
                        "the dataset has no label column (it has {} binary attributes: condition on one of them)",
                        manifest.attributes.len()
                    )));
                }
                Ok(Classes {
                    names: manifest.classes.clone(),
                    columns: Vec::new(),
                })
            }
            Condition::Attributes(names) => {
                let columns = names
                    .iter()
                    .map(|name| {
                        manifest.attribute_index(name).ok_or_else(|| {
                            let known = if manifest.attributes.is_empty() {
                                "the dataset has no attributes (use condition = \"label\")".to_string()
                            } else {
                                format!("known attributes: {}", manifest.attributes.join(", "))
                            };
                            fail(format!("unknown attribute {name:?}; {known}"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let names = (0..1usize << columns.len())
                    .map(|class| {
                        if names.len() == 1 {
                            if class == 1 {
                                names[0].clone()
                            } else {
                                format!("not {}", names[0])
                            }
                        } else {
                            names
                                .iter()
                                .enumerate()
                                .map(|(bit, n)| format!("{}{n}", if class >> bit & 1 == 1 { '+' } else { '-' }))
                                .collect::<Vec<_>>()
                                .join(" ")
                        }
                    })
                    .collect();
                Ok(Classes { names, columns })
            }
        }
    }
}

impl Classes {
    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no classes.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The class of a row from its label and attribute values.
    pub fn class_of(&self, label: i32, attributes: &[bool]) -> i64 {
        if self.columns.is_empty() {
            i64::from(label)
        } else {
            self.columns
                .iter()
                .enumerate()
                .map(|(bit, &c)| i64::from(attributes[c]) << bit)
                .sum()
        }
    }
}

//! The Arrow schema of a shard: `id`, `split`, `label` (when the dataset has classes), `image`,
//! then one boolean column per attribute.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::manifest::{Encoding, ImageInfo};

/// Column of the source file name.
pub const ID: &str = "id";
/// Column of the split name.
pub const SPLIT: &str = "split";
/// Column of the class index.
pub const LABEL: &str = "label";
/// Column of the pixels.
pub const IMAGE: &str = "image";

/// Builds the shard schema for a dataset.
pub fn shard_schema(image: &ImageInfo, has_label: bool, attributes: &[String]) -> SchemaRef {
    let image_type = match image.encoding {
        Encoding::Raw => DataType::FixedSizeBinary(image.bytes() as i32),
        Encoding::Png => DataType::Binary,
    };
    let mut fields = vec![
        Field::new(ID, DataType::Utf8, false),
        Field::new(SPLIT, DataType::Utf8, false),
    ];
    if has_label {
        fields.push(Field::new(LABEL, DataType::Int32, false));
    }
    fields.push(Field::new(IMAGE, image_type, false));
    fields.extend(attributes.iter().map(|name| Field::new(name, DataType::Boolean, false)));
    Arc::new(Schema::new(fields))
}

//! TensorBoard event files in a job's output (`<output>/tensorboard/`): the step metrics as
//! scalars, the sample grids as images, the evaluation figures as scalars.
//!
//! The format is TensorFlow's: a file of TFRecords (`u64` length, masked CRC-32C of the length,
//! the bytes, masked CRC-32C of the bytes), each an `Event` protocol buffer, the first one
//! naming the file version. Object stores cannot append, so each process writes its own file
//! (`events.out.tfevents.<unix seconds>.<host>.<pid>.<n>`, the name TensorBoard looks for) and
//! puts it whole on every flush; a file that grows past [`SEGMENT_BYTES`] is closed and the next
//! flush starts a new one, so a flush never rewrites more than that. TensorBoard reads a folder's
//! files in name order and follows a file as it grows, from local folders and from buckets.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base::Location;
use gantry_proto::pb;
use prost::Message;

use crate::Result;

/// A file is closed (and a new one started) once it holds this many bytes.
pub const SEGMENT_BYTES: usize = 8 << 20;

/// The protocol buffers of an event file (`tensorflow/core/util/event.proto`,
/// `tensorflow/core/framework/summary.proto`), the fields TensorBoard reads for scalars and images.
pub mod proto {
    /// One record of an event file.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// Seconds since the Unix epoch.
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        /// The global step.
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// The first record's `brain.Event:2`.
        #[prost(string, optional, tag = "3")]
        pub file_version: Option<String>,
        /// Values at this step.
        #[prost(message, optional, tag = "5")]
        pub summary: Option<Summary>,
    }

    /// Tagged values.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// The values.
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// One tagged value: a scalar or an image.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series it belongs to.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// A scalar.
        #[prost(float, optional, tag = "2")]
        pub simple_value: Option<f32>,
        /// An encoded image.
        #[prost(message, optional, tag = "4")]
        pub image: Option<Image>,
    }

    /// An encoded image (PNG here).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        /// Pixels high.
        #[prost(int32, tag = "1")]
        pub height: i32,
        /// Pixels wide.
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// 1 grey, 3 RGB, 4 RGBA.
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        /// The PNG file.
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }
}

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// TFRecord's masked CRC-32C.
fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = CASTAGNOLI.checksum(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Appends one TFRecord holding `data` to `out`.
pub fn append_record(out: &mut Vec<u8>, data: &[u8]) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
}

/// The scalars of a step's metrics line: `(tag, value)`. The tags are the `metrics.jsonl` keys
/// under a group (`loss/c_loss`, `perf/images_per_sec`, `time/step_seconds`, ...); timings
/// appear only when measured.
pub fn step_scalars(line: &pb::StepMetrics) -> Vec<(String, f64)> {
    let mut out = vec![
        ("loss/c_loss".to_string(), line.c_loss),
        ("loss/c_wass_loss".to_string(), line.c_wass_loss),
        ("loss/c_gp".to_string(), line.c_gp),
        ("loss/g_loss".to_string(), line.g_loss),
        ("perf/images_per_sec".to_string(), line.images_per_sec),
    ];
    for (tag, seconds) in [
        ("time/step_seconds", line.step_seconds),
        ("time/loader_wait_seconds", line.loader_wait_seconds),
        ("time/collective_seconds", line.collective_seconds),
    ] {
        if seconds > 0.0 {
            out.push((tag.to_string(), seconds));
        }
    }
    if let Some(e) = &line.evaluation {
        out.extend(evaluation_scalars(e));
    }
    out
}

/// The scalars of an evaluation: overall figures under `eval/`, per class under
/// `eval_class/<figure>/<class>`.
pub fn evaluation_scalars(e: &pb::Evaluation) -> Vec<(String, f64)> {
    let mut out = vec![
        ("eval/accuracy".to_string(), e.accuracy),
        ("eval/classifier_accuracy".to_string(), e.classifier_accuracy),
        ("eval/label_swap".to_string(), e.label_swap),
        ("eval/frechet_classifier_features".to_string(), e.frechet),
    ];
    for c in &e.classes {
        out.push((format!("eval_class/accuracy/{}", c.name), c.accuracy));
        out.push((format!("eval_class/frechet/{}", c.name), c.frechet));
    }
    out
}

/// Writes a run's event files. Collects records in memory; [`flush`](Self::flush) stores them.
#[derive(Debug)]
pub struct EventWriter {
    folder: Location,
    /// `events.out.tfevents.<seconds>.<host>.<pid>.` (the segment number follows).
    stem: String,
    segment: u32,
    buffer: Vec<u8>,
    /// Bytes of `buffer` already stored.
    stored: usize,
    last_flush: Instant,
    interval: Duration,
}

impl EventWriter {
    /// A writer of a new file series in `<output>/tensorboard/`; `interval` bounds how long
    /// records wait in memory ([`flush_due`](Self::flush_due)).
    pub fn new(output: &Location, interval: Duration) -> Self {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let host = hostname();
        let stem = format!(
            "events.out.tfevents.{:010}.{host}.{}.",
            now.as_secs(),
            std::process::id()
        );
        let mut writer = Self {
            folder: output.join(base::layout::TENSORBOARD),
            stem,
            segment: 0,
            buffer: Vec::new(),
            stored: 0,
            last_flush: Instant::now(),
            interval,
        };
        writer.start_segment();
        writer
    }

    fn start_segment(&mut self) {
        self.buffer.clear();
        self.stored = 0;
        let event = proto::Event {
            wall_time: wall_time(),
            file_version: Some("brain.Event:2".to_string()),
            ..Default::default()
        };
        append_record(&mut self.buffer, &event.encode_to_vec());
    }

    /// The current file's name in the folder.
    pub fn file_name(&self) -> String {
        format!("{}{}", self.stem, self.segment)
    }

    fn push(&mut self, step: u64, value: Vec<proto::Value>) {
        let event = proto::Event {
            wall_time: wall_time(),
            step: step as i64,
            file_version: None,
            summary: Some(proto::Summary { value }),
        };
        append_record(&mut self.buffer, &event.encode_to_vec());
    }

    /// Scalars at `step`, as one event.
    pub fn scalars(&mut self, step: u64, scalars: &[(String, f64)]) {
        let value = scalars
            .iter()
            .map(|(tag, v)| proto::Value {
                tag: tag.clone(),
                simple_value: Some(*v as f32),
                image: None,
            })
            .collect();
        self.push(step, value);
    }

    /// A PNG image at `step` under `tag`. Its size is read from the PNG header; a buffer that
    /// is not a PNG is refused.
    pub fn png(&mut self, step: u64, tag: &str, png: &[u8]) -> Result<()> {
        let (width, height, colorspace) = png_header(png).ok_or_else(|| crate::Error::Events {
            message: format!("the {tag} image of step {step} is not a PNG file"),
        })?;
        self.push(
            step,
            vec![proto::Value {
                tag: tag.to_string(),
                simple_value: None,
                image: Some(proto::Image {
                    height,
                    width,
                    colorspace,
                    encoded_image_string: png.to_vec(),
                }),
            }],
        );
        Ok(())
    }

    /// Whether records have waited longer than the interval.
    pub fn flush_due(&self) -> bool {
        self.buffer.len() > self.stored && self.last_flush.elapsed() >= self.interval
    }

    /// Stores the current file if it has new records; starts the next file once this one is
    /// past [`SEGMENT_BYTES`].
    pub async fn flush(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        if self.buffer.len() == self.stored {
            return Ok(());
        }
        self.folder.put(&self.file_name(), self.buffer.clone()).await?;
        self.stored = self.buffer.len();
        if self.buffer.len() >= SEGMENT_BYTES {
            self.segment += 1;
            self.start_segment();
        }
        Ok(())
    }
}

fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This host's name for the file names (TensorFlow's convention), without characters a
/// bucket key should not hold.
fn hostname() -> String {
    let name = nix_hostname().unwrap_or_else(|| "localhost".to_string());
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn nix_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and the last byte stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Width, height and TensorBoard colorspace (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA) of a PNG.
fn png_header(png: &[u8]) -> Option<(i32, i32, i32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 26 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(png[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(png[20..24].try_into().ok()?);
    let colorspace = match png[25] {
        0 => 1,
        4 => 2,
        2 | 3 => 3,
        6 => 4,
        _ => return None,
    };
    Some((i32::try_from(width).ok()?, i32::try_from(height).ok()?, colorspace))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the records of an event file back, checking both CRCs.
    fn records(mut bytes: &[u8]) -> Vec<proto::Event> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len_bytes = &bytes[..8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
                masked_crc(len_bytes)
            );
            let data = &bytes[12..12 + len];
            let crc = u32::from_le_bytes(bytes[12 + len..16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(data));
            out.push(proto::Event::decode(data).unwrap());
            bytes = &bytes[16 + len..];
        }
        out
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c_test: Value("123456789") = 0xe3069283; Mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8.
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
        // Mask(0xe3069283), worked out by hand from that formula.
        assert_eq!(masked_crc(b"123456789"), 0xc78a_b0e5);
    }

    #[test]
    fn a_file_starts_with_its_version_and_holds_each_step() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let mut w = EventWriter::new(&output, Duration::from_secs(3600));
        let line = pb::StepMetrics {
            step: 3,
            c_loss: -1.5,
            images_per_sec: 12.0,
            ..Default::default()
        };
        w.scalars(3, &step_scalars(&line));
        assert!(!w.flush_due(), "an hour has not passed");
        rt.block_on(w.flush()).unwrap();
        let bytes = std::fs::read(dir.path().join(base::layout::TENSORBOARD).join(w.file_name())).unwrap();
        let events = records(&bytes);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        let summary = events[1].summary.as_ref().unwrap();
        assert_eq!(events[1].step, 3);
        let c_loss = summary.value.iter().find(|v| v.tag == "loss/c_loss").unwrap();
        assert_eq!(c_loss.simple_value, Some(-1.5));
        // Unmeasured timings are left out rather than written as 0.
        assert!(summary.value.iter().all(|v| !v.tag.starts_with("time/")));
    }

    #[test]
    fn a_png_is_recorded_with_its_size_and_other_bytes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let output = Location::parse(dir.path().to_str().unwrap()).unwrap();
        let mut w = EventWriter::new(&output, Duration::ZERO);
        let mut png = Vec::new();
        let image = image::RgbImage::new(5, 3);
        image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        w.png(7, "samples", &png).unwrap();
        let err = w.png(7, "samples", b"not a png").unwrap_err().to_string();
        assert!(err.contains("not a PNG"), "{err}");
        assert!(w.flush_due());
        rt.block_on(w.flush()).unwrap();
        let bytes = std::fs::read(dir.path().join(base::layout::TENSORBOARD).join(w.file_name())).unwrap();
        let events = records(&bytes);
        let image = events[1].summary.as_ref().unwrap().value[0].image.as_ref().unwrap();
        assert_eq!((image.width, image.height, image.colorspace), (5, 3, 3));
        assert_eq!(image.encoded_image_string, png);
    }
}

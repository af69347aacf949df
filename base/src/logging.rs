//! Logging set-up shared by gantry's binaries: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), human format on stderr (colours only on a terminal), or JSON lines for clusters.
//!
//! Floats are printed for people in both formats, in every event and span field recorded as a
//! float (`images_per_sec = rate`), so call sites log the full value and never round by hand:
//! 4 significant digits, but never fewer than the integer digits (231.5009 -> 231.5,
//! 0.00123456 -> 0.001235, 12345.678 -> 12346), in scientific notation below 1e-4 and from 1e15
//! (0.0000123456 -> 1.235e-5), without trailing zeros (2.0 -> 2). Integers, strings and values
//! logged with `%`/`?` are printed as they are.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format, as chosen by `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    subscriber(format, filter, std::io::stderr, std::io::stderr().is_terminal()).init();
}

/// The subscriber [`init`] installs, writing to `writer`.
fn subscriber<W>(format: LogFormat, filter: EnvFilter, writer: W, ansi: bool) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => Box::new(builder.fmt_fields(HumanFields).finish()),
        LogFormat::Json => Box::new(builder.json().map_event_format(RoundJsonFloats).finish()),
    }
}

/// Significant digits of a logged float.
const SIGNIFICANT_DIGITS: i32 = 4;

/// `value` as a person reads it: see the module documentation for the rule.
fn round_float(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return if value == 0.0 { "0".into() } else { value.to_string() };
    }
    let magnitude = value.abs().log10().floor() as i32;
    if !(-4..15).contains(&magnitude) {
        let text = format!("{:.*e}", (SIGNIFICANT_DIGITS - 1) as usize, value);
        let (mantissa, exponent) = text.split_once('e').expect("{:e} writes an exponent");
        return format!("{}e{exponent}", trim_zeros(mantissa));
    }
    let decimals = (SIGNIFICANT_DIGITS - 1 - magnitude).max(0) as usize;
    trim_zeros(&format!("{value:.decimals$}")).to_string()
}

/// `number` without the trailing zeros of its fraction (and without a bare trailing `.`).
fn trim_zeros(number: &str) -> &str {
    if number.contains('.') {
        number.trim_end_matches('0').trim_end_matches('.')
    } else {
        number
    }
}

/// Human-format fields: tracing-subscriber's default field format, with floats rounded.
#[derive(Debug)]
struct HumanFields;

impl<'writer> MakeVisitor<Writer<'writer>> for HumanFields {
    type Visitor = RoundFloats<DefaultVisitor<'writer>>;

    fn make_visitor(&self, target: Writer<'writer>) -> Self::Visitor {
        RoundFloats(DefaultVisitor::new(target, true))
    }
}

/// A field visitor that hands floats, rounded, to the visitor it wraps.
struct RoundFloats<V>(V);

impl<V: Visit> Visit for RoundFloats<V> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.record_debug(field, &format_args!("{}", round_float(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.record_str(field, value);
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.record_error(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, value);
    }
}

impl<V: VisitOutput<fmt::Result>> VisitOutput<fmt::Result> for RoundFloats<V> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl<V: VisitFmt> VisitFmt for RoundFloats<V> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

/// JSON events: the line tracing-subscriber's JSON format writes, with every float (a number
/// with a fraction or an exponent, outside strings) rounded. Its JSON visitor cannot be
/// replaced, and span fields reach it already serialised, so the line is rewritten instead.
struct RoundJsonFloats<E>(E);

impl<S, N, E> FormatEvent<S, N> for RoundJsonFloats<E>
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
    E: FormatEvent<S, N>,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&round_json_floats(&line))
    }
}

/// `json` with its floats rounded by [`round_float`]; strings and integers are kept as they are.
fn round_json_floats(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut chars = json.char_indices().peekable();
    let (mut in_string, mut escaped) = (false, false);
    while let Some((start, c)) = chars.next() {
        if in_string {
            out.push(c);
            (in_string, escaped) = (escaped || c != '"', !escaped && c == '\\');
        } else if c == '-' || c.is_ascii_digit() {
            let mut end = start + 1;
            while let Some(&(i, c)) = chars.peek() {
                if !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-')) {
                    break;
                }
                end = i + 1;
                chars.next();
            }
            let number = &json[start..end];
            match number.parse::<f64>() {
                Ok(value) if number.contains(['.', 'e', 'E']) => out.push_str(&round_float(value)),
                _ => out.push_str(number),
            }
        } else {
            out.push(c);
            in_string = c == '"';
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn floats_keep_four_significant_digits_and_their_integer_digits() {
        for (value, text) in [
            (231.5009550513431, "231.5"),
            (0.00123456, "0.001235"),
            (12345.678, "12346"),
            (0.0000123456, "1.235e-5"),
            (-0.5, "-0.5"),
            (2.0, "2"),
            (0.0, "0"),
            (1.5e20, "1.5e20"),
            (9999.7, "10000"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(round_float(value), text, "{value}");
        }
    }

    #[test]
    fn json_floats_are_rounded_outside_strings_only() {
        let line = r#"{"a":231.5009550513431,"b":-1.23456e-7,"n":17,"s":"0.123456 \"q\" 1.99999","t":[0.123456]}"#;
        assert_eq!(
            round_json_floats(line),
            r#"{"a":231.5,"b":-1.235e-7,"n":17,"s":"0.123456 \"q\" 1.99999","t":[0.1235]}"#
        );
    }

    /// A writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;

        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    /// What the subscriber of `format` writes for one event inside one span.
    fn logged(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let subscriber = subscriber(format, EnvFilter::new("info"), buffer.clone(), false);
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("epoch", loss = 0.123456789_f64).entered();
            tracing::info!(
                images_per_sec = 231.5009550513431,
                tiny = 0.0000123456,
                big = 12345.678,
                steps = 7u64,
                note = "1.23456789",
                "pack done"
            );
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn human_lines_round_floats() {
        let line = logged(LogFormat::Human);
        for expected in [
            "epoch{loss=0.1235}",
            "pack done images_per_sec=231.5 tiny=1.235e-5 big=12346 steps=7 note=\"1.23456789\"",
        ] {
            assert!(line.contains(expected), "{expected:?} not in {line:?}");
        }
    }

    #[test]
    fn json_lines_round_floats() {
        let line = logged(LogFormat::Json);
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line:?}");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fields = &event["fields"];
        assert_eq!(fields["message"], "pack done", "{line}");
        assert_eq!(fields["images_per_sec"], 231.5, "{line}");
        assert_eq!(fields["tiny"], 1.235e-5, "{line}");
        assert_eq!(fields["big"].as_f64(), Some(12346.0), "{line}");
        assert_eq!(fields["steps"], 7, "{line}");
        assert_eq!(fields["note"], "1.23456789", "{line}");
        assert_eq!(event["span"]["loss"], 0.1235, "{line}");
        assert!(!line.contains("231.50"), "{line}");
    }
}

//! A panic turned into words: every place that catches one (a spawned task, a libtorch call
//! behind `catch_unwind`, a thread joined) says what it was with [`message`].

use std::any::Any;

/// The message a panic carried: its text when the payload is a string, as `panic!` makes it
/// (a formatted `String` or a `&'static str` literal), else a fixed phrase.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_string()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs `f`, turning a panic into `Err` with its [`message`].
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| message(payload.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::{catch, message};

    #[test]
    fn formatted_literal_and_opaque_panics_become_messages() {
        assert_eq!(
            catch(|| -> u32 { panic!("row {} is corrupt", 7) }),
            Err("row 7 is corrupt".into())
        );
        assert_eq!(catch(|| -> u32 { panic!("a literal") }), Err("a literal".into()));
        let opaque = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
        assert_eq!(message(opaque.as_ref()), "a panic without a message");
        assert_eq!(catch(|| 5), Ok(5));
    }
}

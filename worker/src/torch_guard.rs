//! libtorch's failures as errors. tch's infallible calls panic when libtorch fails (an
//! allocation failure among others), with libtorch's whole C++ stack in the message: [`catch`]
//! runs such calls and turns a panic into [`Error::Allocation`]; [`libtorch_message`] keeps the
//! first line of libtorch's text (the `worker` binary's panic hook prints a panic's
//! [`base::panic::message`] with it).

use crate::{Error, Result};

/// The first line of a libtorch error out of a tch panic's text (`called Result::unwrap() on
/// an Err value: Torch("[enforce fail ...] DefaultCPUAllocator: can't allocate memory: you tried
/// to allocate 33554432 bytes. ...\nframe #0: ...")`), without the C++ stack.
pub fn libtorch_message(panic: &str) -> String {
    let text = panic.split_once("Torch(\"").map_or(panic, |(_, inner)| inner);
    let first = text.split("\\n").next().unwrap_or(text);
    let first = first.lines().next().unwrap_or(first);
    // `[enforce fail at alloc_cpu.cpp:127] err == 0. ` is libtorch's location, not the news.
    let first = match first.find("] ") {
        Some(i) if first.starts_with('[') => first[i + 2..].trim_start_matches("err == 0. "),
        _ => first,
    };
    first.strip_suffix("\")").unwrap_or(first).to_string()
}

/// Runs `f`, turning a libtorch panic (tch's infallible calls panic on errors, allocation
/// failures included) into [`Error::Allocation`] naming `during` and libtorch's message.
pub fn catch<T>(during: &str, f: impl FnOnce() -> T) -> Result<T> {
    base::panic::catch(f).map_err(|panic| Error::Allocation {
        during: during.to_string(),
        message: libtorch_message(&panic),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_libtorch_panic_reads_as_its_first_line() {
        let panic = r#"called `Result::unwrap()` on an `Err` value: Torch("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes. Error code 12 (Cannot allocate memory)\nframe #0: c10::ThrowEnforceNotMet(char const*, int)\n")"#;
        assert_eq!(
            libtorch_message(panic),
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 33554432 bytes. Error code 12 (Cannot allocate memory)"
        );
        assert_eq!(
            libtorch_message(r#"x: Torch("could not create a primitive")"#),
            "could not create a primitive"
        );
        assert_eq!(libtorch_message("plain panic\nsecond line"), "plain panic");
    }

    #[test]
    fn a_failing_libtorch_call_is_an_allocation_error_naming_what_was_done() {
        // A matrix product of mismatched shapes: tch's infallible form panics with libtorch's error.
        let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let error = catch("step 7", || a.matmul(&a)).unwrap_err();
        let Error::Allocation { during, message } = &error else {
            panic!("not an allocation error: {error:?}");
        };
        assert_eq!(during, "step 7");
        assert!(!message.is_empty() && !message.contains("frame #"), "{message}");
        assert!(error.to_string().starts_with("step 7 failed: "), "{error}");
    }

    #[test]
    fn a_call_that_succeeds_gives_its_value() {
        assert_eq!(catch("nothing", || 6 * 7).unwrap(), 42);
    }
}

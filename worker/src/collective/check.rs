//! `worker collective-check`: one rank of an exchange between real processes that verifies its
//! own results. Every rank all-reduces tensors of several shapes, layouts and kinds whose values
//! depend on the rank (small integers, so the sum is exact in any order and the mean is exactly
//! `sum / world_size` in the tensor's kind), broadcasts from the first and the last rank, passes
//! a store barrier, and checks every value bit for bit. Progress goes to `out` as JSON lines, so
//! a launcher can read rank 0's store port and the ranks' results.

use std::io::Write;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::{Collective, GroupSpec, Rendezvous};

/// Why a check rank failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The group or an exchange failed.
    #[error(transparent)]
    Collective(#[from] super::Error),
    /// An exchange completed with wrong values.
    #[error("rank {rank}: {what}: {difference}")]
    Mismatch {
        /// This process's rank.
        rank: usize,
        /// The exchange and the tensor.
        what: String,
        /// The first wrong element.
        difference: String,
    },
    /// The progress lines could not be written.
    #[error("writing the check's output failed")]
    Output(#[from] std::io::Error),
}

/// A fault a rank plays, for tests of how its peers fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Fault {
    /// Take part normally.
    #[default]
    None,
    /// Join the group, then stop taking part (stay alive) instead of the first all-reduce.
    HangBeforeAllReduce,
    /// Do the exchanges, then stop taking part (stay alive) instead of the barrier.
    HangBeforeBarrier,
}

/// One line of the check's output.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Event<'a> {
    /// The store is open (rank 0) or reached, at this port.
    Store { rank: usize, port: u16 },
    /// The process group is formed.
    Joined { rank: usize, backend: &'a str },
    /// The rank stops taking part (a [`Fault`]).
    Hanging { rank: usize, before: &'a str },
    /// Every result matched.
    Done {
        rank: usize,
        world_size: usize,
        tensors_checked: usize,
        /// Digest of every tensor after the exchanges: equal on all ranks.
        digest: String,
        seconds: f64,
    },
}

fn emit(out: &mut dyn Write, event: &Event<'_>) -> Result<(), CheckError> {
    writeln!(out, "{}", serde_json::to_string(event).expect("events serialise"))?;
    out.flush()?;
    Ok(())
}

/// What a rank fills a tensor with: small integers that differ by rank, tensor and position.
fn value(rank: usize, tensor: usize, index: usize) -> f64 {
    ((rank * 7 + tensor * 5 + index * 3) % 11) as f64 - 5.0
}

/// The shapes and kinds exchanged: (shape, kind, transposed after filling).
const MEAN_TENSORS: [(&[i64], Kind, bool); 7] = [
    (&[3, 4], Kind::Float, false),
    (&[5], Kind::Float, false),
    (&[4, 6], Kind::Float, true),
    (&[2, 2, 3], Kind::Double, false),
    (&[], Kind::Float, false),
    (&[0], Kind::Float, false),
    (&[257, 33], Kind::Float, false),
];

const BROADCAST_TENSORS: [(&[i64], Kind, bool); 3] = [
    (&[7, 3], Kind::Float, false),
    (&[5], Kind::Int64, false),
    (&[3, 8], Kind::Double, true),
];

/// A tensor of `shape` and `kind` on `device` whose element `i` (in filling order) is `fill(i)`;
/// `transposed` makes it a non-contiguous view.
fn make(shape: &[i64], kind: Kind, transposed: bool, device: Device, fill: impl Fn(usize) -> f64) -> Tensor {
    let count: i64 = shape.iter().product();
    let values: Vec<f64> = (0..count as usize).map(fill).collect();
    let t = Tensor::from_slice(&values)
        .to_kind(kind)
        .reshape(shape)
        .to_device(device);
    if transposed { t.tr() } else { t }
}

/// The mean of `value` over ranks, computed as the exchange must: an exact sum, then one
/// division in the tensor's kind.
fn expected_mean(world: usize, tensor: usize, index: usize, kind: Kind) -> f64 {
    let sum: f64 = (0..world).map(|r| value(r, tensor, index)).sum();
    match kind {
        Kind::Float => f64::from(sum as f32 / world as f32),
        _ => sum / world as f64,
    }
}

/// Describes the first element where `actual` differs from `expected`.
fn difference(actual: &Tensor, expected: &Tensor) -> Option<String> {
    if actual.size() != expected.size() || actual.kind() != expected.kind() {
        return Some(format!(
            "shape/kind {:?}/{:?}, expected {:?}/{:?}",
            actual.size(),
            actual.kind(),
            expected.size(),
            expected.kind()
        ));
    }
    if actual.equal(expected) {
        return None;
    }
    let a = Vec::<f64>::try_from(actual.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1])).ok()?;
    let e = Vec::<f64>::try_from(expected.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1])).ok()?;
    let i = a.iter().zip(&e).position(|(x, y)| x.to_bits() != y.to_bits())?;
    Some(format!("element {i} is {} instead of {}", a[i], e[i]))
}

fn digest(tensors: &[Tensor]) -> String {
    let mut hash = Sha256::new();
    for t in tensors {
        let values =
            Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).reshape([-1])).expect("tensor values");
        for v in values {
            hash.update(v.to_le_bytes());
        }
    }
    hex::encode(&hash.finalize()[..8])
}

/// Blocks for good: the rank stays alive without taking part.
fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

/// Runs one rank of the check; progress and the result go to `out`.
pub fn run(spec: &GroupSpec, fault: Fault, out: &mut dyn Write) -> Result<(), CheckError> {
    let started = Instant::now();
    let (rank, world) = (spec.rank, spec.world_size);
    let rendezvous = Rendezvous::new(spec)?;
    emit(
        out,
        &Event::Store {
            rank,
            port: rendezvous.port(),
        },
    )?;
    let mut group = rendezvous.into_group()?;
    emit(
        out,
        &Event::Joined {
            rank,
            backend: group.backend(),
        },
    )?;
    let device = spec.device;

    if fault == Fault::HangBeforeAllReduce {
        emit(
            out,
            &Event::Hanging {
                rank,
                before: "all-reduce",
            },
        )?;
        hang();
    }
    let means: Vec<Tensor> = MEAN_TENSORS
        .iter()
        .enumerate()
        .map(|(k, (shape, kind, tr))| make(shape, *kind, *tr, device, |i| value(rank, k, i)))
        .collect();
    group.all_reduce_mean(&means.iter().collect::<Vec<_>>())?;
    for (k, ((shape, kind, tr), actual)) in MEAN_TENSORS.iter().zip(&means).enumerate() {
        let expected = make(shape, *kind, *tr, device, |i| expected_mean(world, k, i, *kind));
        if let Some(difference) = difference(actual, &expected) {
            return Err(CheckError::Mismatch {
                rank,
                what: format!("all-reduce mean of tensor {k} {shape:?} {kind:?}"),
                difference,
            });
        }
    }

    let mut broadcasts = Vec::new();
    for root in [0, world - 1] {
        let fill = |from: usize, k: usize| move |i: usize| (from * 1000 + k * 100 + i) as f64;
        let tensors: Vec<Tensor> = BROADCAST_TENSORS
            .iter()
            .enumerate()
            .map(|(k, (shape, kind, tr))| make(shape, *kind, *tr, device, fill(rank, k)))
            .collect();
        group.broadcast(&tensors.iter().collect::<Vec<_>>(), root)?;
        for (k, ((shape, kind, tr), actual)) in BROADCAST_TENSORS.iter().zip(&tensors).enumerate() {
            let expected = make(shape, *kind, *tr, device, fill(root, k));
            if let Some(difference) = difference(actual, &expected) {
                return Err(CheckError::Mismatch {
                    rank,
                    what: format!("broadcast from rank {root} of tensor {k} {shape:?} {kind:?}"),
                    difference,
                });
            }
        }
        broadcasts.extend(tensors);
    }

    if fault == Fault::HangBeforeBarrier {
        emit(
            out,
            &Event::Hanging {
                rank,
                before: "barrier",
            },
        )?;
        hang();
    }
    group.barrier(spec.timeout)?;
    let checked = means.len() + broadcasts.len();
    let all: Vec<Tensor> = means.into_iter().chain(broadcasts).collect();
    emit(
        out,
        &Event::Done {
            rank,
            world_size: world,
            tensors_checked: checked,
            digest: digest(&all),
            seconds: started.elapsed().as_secs_f64(),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_means_are_exact_in_the_tensors_kind() {
        // Rank values 0..3 of tensor 0, element 0: -5, 2, -2 (sum -5); -5/3 in f32 and f64.
        assert_eq!([value(0, 0, 0), value(1, 0, 0), value(2, 0, 0)], [-5.0, 2.0, -2.0]);
        assert_eq!(expected_mean(3, 0, 0, Kind::Float), f64::from(-5.0f32 / 3.0));
        assert_eq!(expected_mean(3, 0, 0, Kind::Double), -5.0 / 3.0);
        assert_ne!(
            expected_mean(3, 0, 0, Kind::Float),
            expected_mean(3, 0, 0, Kind::Double)
        );
    }

    #[test]
    fn differences_name_the_first_element() {
        let a = make(&[2, 2], Kind::Float, true, Device::Cpu, |i| i as f64);
        let b = make(&[2, 2], Kind::Float, true, Device::Cpu, |i| {
            if i == 2 { 9.0 } else { i as f64 }
        });
        assert_eq!(difference(&a, &a.copy()), None);
        // Transposed: filling index 2 is logical element 1.
        assert_eq!(difference(&a, &b).unwrap(), "element 1 is 2 instead of 9");
        let c = make(&[4], Kind::Float, false, Device::Cpu, |i| i as f64);
        assert!(
            difference(&a, &c)
                .unwrap()
                .starts_with("shape/kind [2, 2]/Float, expected [4]/Float")
        );
    }
}

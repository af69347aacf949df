//! The gradient exchange of data-parallel training: every rank calls the same collectives in
//! the same order, and each call returns with every rank holding the same values.
//!
//! - [`Collective`]: what the trainer calls: [`all_reduce_mean`](Collective::all_reduce_mean)
//!   (the gradients, all tensors of one kind in one fused exchange),
//!   [`broadcast`](Collective::broadcast) (the initial weights) and a store
//!   [`barrier`](Collective::barrier) that names the ranks that did not arrive.
//! - [`Single`]: a world of one process, where all three are no-ops.
//! - [`ProcessGroup`]: PyTorch's c10d, the engine DDP uses, reached through the C++ shim in
//!   `csrc/`: Gloo for CPU tensors, NCCL for CUDA tensors. [`Rendezvous`] forms it: rank 0 hosts
//!   c10d's `TCPStore`, every rank checks that the store serves its job's attempt and that it
//!   holds the attempt's secret, and the group's keys live under a namespace derived from the
//!   secret.
//! - [`connect`]: one call from a [`GroupSpec`] to a `Box<dyn Collective>`.
//! - [`check`]: `worker collective-check`, an exchange between real processes that verifies its
//!   results; [`bench`]: `worker bench-allreduce`, bus bandwidth on loopback.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use worker::collective::{self, GroupSpec};
//!
//! let spec = GroupSpec::new("10.0.0.1:29500", 1, 4, "job-7", 0, "per-attempt secret", tch::Device::Cpu);
//! let mut group = collective::connect(&spec)?;
//! let weight = tch::Tensor::zeros([3, 3], (tch::Kind::Float, tch::Device::Cpu));
//! group.broadcast(&[&weight], 0)?; // rank 0's initial weights everywhere
//! let grad = weight.ones_like();
//! group.all_reduce_mean(&[&grad])?; // every rank's gradient replaced by the mean
//! group.barrier(Duration::from_secs(60))?;
//! # Ok(())
//! # }
//! ```

pub mod bench;
mod c10d;
pub mod check;
mod error;
mod ffi;

use std::time::Duration;

use tch::{Device, Kind, Tensor};

pub use c10d::{ProcessGroup, Rendezvous};
pub use error::{Error, Result};
pub use ffi::CppError;

/// How long a rank waits for its peers by default: to reach the store, to form the group, in a
/// collective.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Collective operations over a fixed group of ranks. Every rank must make the same calls in
/// the same order, with tensors of the same kinds and sizes; tensors are updated in place.
pub trait Collective: Send {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn world_size(&self) -> usize;

    /// Replaces every tensor by its mean over all ranks. The tensors of each kind are exchanged
    /// as one flat buffer (one collective per kind, in order of first appearance); floating
    /// kinds only.
    fn all_reduce_mean(&mut self, tensors: &[&Tensor]) -> Result<()>;

    /// Copies rank `root`'s tensors into every other rank's (fused like
    /// [`all_reduce_mean`](Self::all_reduce_mean)).
    fn broadcast(&mut self, tensors: &[&Tensor], root: usize) -> Result<()>;

    /// Returns when every rank has reached this barrier; after `timeout`, fails naming the
    /// ranks that did not.
    fn barrier(&mut self, timeout: Duration) -> Result<()>;
}

/// A world of one process: nothing to exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce_mean(&mut self, _tensors: &[&Tensor]) -> Result<()> {
        Ok(())
    }

    fn broadcast(&mut self, _tensors: &[&Tensor], root: usize) -> Result<()> {
        if root != 0 {
            return Err(Error::Invalid {
                message: format!("broadcast root {root} in a world of 1"),
            });
        }
        Ok(())
    }

    fn barrier(&mut self, _timeout: Duration) -> Result<()> {
        Ok(())
    }
}

/// A collective that adds up the wall time its calls take ([`take_spent`](Self::take_spent)):
/// the time a rank spends exchanging rather than computing. With NCCL a call returns once the
/// work is queued on the device's stream, so this counts the host's wait only.
pub struct Timed {
    inner: Box<dyn Collective>,
    spent: Duration,
}

impl Timed {
    /// Times `inner`'s calls.
    pub fn new(inner: Box<dyn Collective>) -> Self {
        Self {
            inner,
            spent: Duration::ZERO,
        }
    }

    /// The time spent in calls since the last take.
    pub fn take_spent(&mut self) -> Duration {
        std::mem::take(&mut self.spent)
    }

    fn timed<T>(&mut self, f: impl FnOnce(&mut dyn Collective) -> T) -> T {
        let started = std::time::Instant::now();
        let out = f(self.inner.as_mut());
        self.spent += started.elapsed();
        out
    }
}

impl Collective for Timed {
    fn rank(&self) -> usize {
        self.inner.rank()
    }

    fn world_size(&self) -> usize {
        self.inner.world_size()
    }

    fn all_reduce_mean(&mut self, tensors: &[&Tensor]) -> Result<()> {
        self.timed(|c| c.all_reduce_mean(tensors))
    }

    fn broadcast(&mut self, tensors: &[&Tensor], root: usize) -> Result<()> {
        self.timed(|c| c.broadcast(tensors, root))
    }

    fn barrier(&mut self, timeout: Duration) -> Result<()> {
        self.timed(|c| c.barrier(timeout))
    }
}

/// Where and how a rank joins its group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// Rank 0's rendezvous store, `HOST:PORT`: rank 0 listens there (port 0: a free port, see
    /// [`Rendezvous::port`]), the others connect.
    pub address: String,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// The number of ranks.
    pub world_size: usize,
    /// The job: the store's keys are namespaced by it.
    pub job: String,
    /// The job's attempt: a rank of another attempt is refused.
    pub attempt: u32,
    /// Shared by the ranks of this attempt only: a process without it cannot join.
    pub secret: String,
    /// Where the tensors live: the CPU (Gloo) or a CUDA device (NCCL).
    pub device: Device,
    /// The address this rank's Gloo transport listens on and its peers dial (this node's
    /// advertised host); None: c10d's default (this host's name, else loopback). NCCL finds
    /// its own interfaces.
    pub bind_host: Option<String>,
    /// How long to wait for the store, for the group to form, and in each collective.
    pub timeout: Duration,
}

impl GroupSpec {
    /// A spec with c10d's default bind address and [`DEFAULT_TIMEOUT`].
    pub fn new(
        address: impl Into<String>,
        rank: usize,
        world_size: usize,
        job: impl Into<String>,
        attempt: u32,
        secret: impl Into<String>,
        device: Device,
    ) -> GroupSpec {
        GroupSpec {
            address: address.into(),
            rank,
            world_size,
            job: job.into(),
            attempt,
            secret: secret.into(),
            device,
            bind_host: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The spec of a coordinator's assignment: rank 0's advertised address hosts the store,
    /// and this rank's Gloo transport listens on the host of its own advertised address. The
    /// tensors live on `device` (the job's, resolved on this worker), and `timeout` is the
    /// job's collective timeout.
    pub fn from_assignment(
        assignment: &gantry_proto::pb::Assignment,
        device: Device,
        timeout: Duration,
    ) -> Result<GroupSpec> {
        let invalid = |message: String| Error::Invalid { message };
        let rank = assignment.rank as usize;
        let world_size = assignment.world_size as usize;
        if assignment.peers.len() != world_size {
            return Err(invalid(format!(
                "the assignment lists {} peer address(es) for a world of {world_size}",
                assignment.peers.len()
            )));
        }
        let own = assignment
            .peers
            .get(rank)
            .ok_or_else(|| invalid(format!("rank {rank} is outside a world of {world_size}")))?;
        let (host, _) = split_address(own)?;
        let mut spec = GroupSpec::new(
            assignment.peers[0].clone(),
            rank,
            world_size,
            assignment.job_id.clone(),
            assignment.attempt,
            assignment.secret.clone(),
            device,
        );
        spec.bind_host = Some(host);
        spec.timeout = timeout;
        Ok(spec)
    }

    /// Every problem of the spec, or none.
    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.world_size == 0 {
            problems.push("world size 0".to_string());
        } else if self.rank >= self.world_size {
            problems.push(format!("rank {} is outside a world of {}", self.rank, self.world_size));
        }
        if let Err(Error::Invalid { message }) = split_address(&self.address) {
            problems.push(message);
        }
        if self.job.is_empty() {
            problems.push("empty job name".to_string());
        }
        if self.secret.is_empty() {
            problems.push("empty secret".to_string());
        }
        if self.timeout.is_zero() {
            problems.push("zero timeout".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid {
                message: problems.join("; "),
            })
        }
    }
}

/// `HOST:PORT` (`[v6]:PORT` too) as host and port.
fn split_address(address: &str) -> Result<(String, u16)> {
    base::address::HostPort::parse_with_port(address).map_err(|why| Error::Invalid {
        message: format!("address {address:?} is not HOST:PORT: {why}"),
    })
}

/// The group of `spec`: [`Single`] for a world of one, else a c10d [`ProcessGroup`] (which
/// returns once every rank has joined, or fails after the spec's timeout).
pub fn connect(spec: &GroupSpec) -> Result<Box<dyn Collective>> {
    spec.validate()?;
    if spec.world_size == 1 {
        return Ok(Box::new(Single));
    }
    Ok(Box::new(Rendezvous::new(spec)?.into_group()?))
}

/// The indices of `tensors` grouped by kind, in order of each kind's first appearance.
fn by_kind(tensors: &[&Tensor]) -> Vec<(Kind, Vec<usize>)> {
    let mut groups: Vec<(Kind, Vec<usize>)> = Vec::new();
    for (i, t) in tensors.iter().enumerate() {
        let kind = t.kind();
        match groups.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, members)) => members.push(i),
            None => groups.push((kind, vec![i])),
        }
    }
    groups
}

/// Runs `exchange` on one flat buffer per kind of `tensors` and writes the results back into the
/// tensors (unless `write_back` is false). A kind with a single contiguous tensor is exchanged
/// in place, without a copy.
fn fused(
    op: &'static str,
    tensors: &[&Tensor],
    write_back: bool,
    mut exchange: impl FnMut(&mut Tensor) -> Result<()>,
) -> Result<()> {
    let torch = |source| Error::Torch { op, source };
    let _no_grad = tch::no_grad_guard();
    for (_, members) in by_kind(tensors) {
        if members.iter().all(|&i| tensors[i].numel() == 0) {
            continue;
        }
        if let [only] = members[..]
            && tensors[only].is_contiguous()
        {
            let mut flat = tensors[only].f_view([-1]).map_err(torch)?;
            exchange(&mut flat)?;
            continue;
        }
        let pieces = members
            .iter()
            .map(|&i| tensors[i].f_reshape([-1]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(torch)?;
        let mut flat = Tensor::f_cat(&pieces, 0).map_err(torch)?;
        drop(pieces);
        exchange(&mut flat)?;
        if !write_back {
            continue;
        }
        let mut offset = 0;
        for &i in &members {
            let target = tensors[i];
            let n = target.numel() as i64;
            let part = flat
                .f_narrow(0, offset, n)
                .and_then(|p| p.f_view_as(target))
                .map_err(torch)?;
            target.shallow_clone().f_copy_(&part).map_err(torch)?;
            offset += n;
        }
    }
    Ok(())
}

/// Whether the kind can hold a mean.
fn is_floating(kind: Kind) -> bool {
    matches!(kind, Kind::Half | Kind::Float | Kind::Double | Kind::BFloat16)
}

/// Checks that every tensor lives on `device` (and, for means, has a floating kind).
fn check_tensors(op: &'static str, tensors: &[&Tensor], device: Device, floating: bool) -> Result<()> {
    for (i, t) in tensors.iter().enumerate() {
        if t.device() != device {
            return Err(Error::Tensors {
                op,
                message: format!(
                    "tensor {i} is on {:?} but the group exchanges tensors on {device:?}",
                    t.device()
                ),
            });
        }
        if floating && !is_floating(t.kind()) {
            return Err(Error::Tensors {
                op,
                message: format!("tensor {i} is {:?}: a mean needs a floating kind", t.kind()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_into_host_and_port() {
        assert_eq!(split_address("127.0.0.1:29500").unwrap(), ("127.0.0.1".into(), 29500));
        assert_eq!(split_address("node-3:0").unwrap(), ("node-3".into(), 0));
        assert_eq!(split_address("[::1]:7").unwrap(), ("::1".into(), 7));
        for bad in ["node", "node:", ":80", "node:http", "node:70000"] {
            let err = split_address(bad).unwrap_err();
            assert!(err.to_string().contains("is not HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_spec_lists_all_its_problems() {
        let mut spec = GroupSpec::new("nowhere", 2, 2, "", 0, "", Device::Cpu);
        spec.timeout = Duration::ZERO;
        let message = spec.validate().unwrap_err().to_string();
        for part in [
            "rank 2 is outside a world of 2",
            "\"nowhere\" is not HOST:PORT",
            "empty job",
            "empty secret",
            "zero timeout",
        ] {
            assert!(message.contains(part), "{part:?} missing from {message}");
        }
    }

    #[test]
    fn an_assignment_gives_the_store_address_and_the_own_host() {
        let assignment = gantry_proto::pb::Assignment {
            job_id: "j".into(),
            attempt: 3,
            rank: 1,
            world_size: 2,
            peers: vec!["node-a:29500".into(), "node-b:29500".into()],
            secret: "s".into(),
            spec: None,
        };
        let spec = GroupSpec::from_assignment(&assignment, Device::Cpu, Duration::from_secs(7)).unwrap();
        assert_eq!(spec.address, "node-a:29500");
        assert_eq!((spec.device, spec.timeout), (Device::Cpu, Duration::from_secs(7)));
        assert_eq!(spec.bind_host.as_deref(), Some("node-b"));
        assert_eq!((spec.rank, spec.world_size, spec.attempt), (1, 2, 3));
        let short = gantry_proto::pb::Assignment {
            peers: vec!["node-a:29500".into()],
            ..assignment
        };
        let err = GroupSpec::from_assignment(&short, Device::Cpu, DEFAULT_TIMEOUT).unwrap_err();
        assert!(err.to_string().contains("1 peer address(es) for a world of 2"), "{err}");
    }

    #[test]
    fn fusing_groups_by_kind_and_writes_every_tensor_back() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]).tr(); // not contiguous
        let b = Tensor::from(5.0f64); // 0-dim, another kind
        let c = Tensor::from_slice(&[6.0f32]);
        let mut seen = Vec::new();
        fused("test", &[&a, &b, &c], true, |flat| {
            seen.push((flat.kind(), flat.size()));
            let _ = flat.f_mul_scalar_(10.0).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(Kind::Float, vec![5]), (Kind::Double, vec![1])]);
        assert_eq!(
            Vec::<f32>::try_from(a.contiguous().view([-1])).unwrap(),
            [10.0, 30.0, 20.0, 40.0]
        );
        assert_eq!(b.double_value(&[]), 50.0);
        assert_eq!(Vec::<f32>::try_from(&c).unwrap(), [60.0]);
    }

    #[test]
    fn a_single_contiguous_tensor_is_exchanged_in_place() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]);
        fused("test", &[&a], false, |flat| {
            let _ = flat.f_add_scalar_(1.0).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(Vec::<f32>::try_from(&a).unwrap(), [2.0, 3.0]);
    }

    #[test]
    fn means_need_floating_tensors_on_the_groups_device() {
        let ints = Tensor::from_slice(&[1i64]);
        let err = check_tensors("all-reduce", &[&ints], Device::Cpu, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor 0 is Int64: a mean needs a floating kind"),
            "{err}"
        );
        assert!(check_tensors("broadcast", &[&ints], Device::Cpu, false).is_ok());
        let err = check_tensors("broadcast", &[&ints], Device::Cuda(0), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("tensor 0 is on Cpu but the group exchanges tensors on Cuda(0)"),
            "{err}"
        );
    }

    #[test]
    fn a_single_process_world_needs_no_exchange() {
        let mut single = Single;
        let t = Tensor::from_slice(&[1.0f32]);
        single.all_reduce_mean(&[&t]).unwrap();
        single.broadcast(&[&t], 0).unwrap();
        single.barrier(Duration::from_millis(1)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0]);
        assert!(single.broadcast(&[&t], 1).is_err());
        assert_eq!((single.rank(), single.world_size()), (0, 1));
    }
}

//! The Fréchet distance in the classifier's feature space: [`Stats`] accumulates a set of
//! images' features (count, sum, outer products, in f64 on the CPU); [`frechet_distance`]
//! compares two Gaussians, [`stats_distance`] two sets, and [`mixture_distance`] the
//! class-balanced mixtures of two lists of per-class sets. Square roots are symmetric, by
//! eigendecomposition, with rounding's negative eigenvalues clamped to 0: the distance is finite
//! for any covariances, singular ones included.

use tch::{Device, Kind, Tensor};

/// Feature statistics of a set of images, accumulated in f64 on the CPU.
#[derive(Debug)]
pub struct Stats {
    pub(super) count: u64,
    pub(super) sum: Tensor,
    pub(super) outer: Tensor,
}

impl Stats {
    /// No images yet, of `dims` feature dimensions.
    pub(super) fn new(dims: i64) -> Self {
        let options = (Kind::Double, Device::Cpu);
        Self {
            count: 0,
            sum: Tensor::zeros([dims], options),
            outer: Tensor::zeros([dims, dims], options),
        }
    }

    /// Adds features `[n, dims]`.
    pub(super) fn add(&mut self, features: &Tensor) {
        let f = features.to_device(Device::Cpu).to_kind(Kind::Double);
        self.count += f.size()[0] as u64;
        self.sum += f.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
        self.outer += f.transpose(0, 1).matmul(&f);
    }

    /// Images counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The mean.
    pub fn mean(&self) -> Tensor {
        &self.sum / (self.count.max(1) as f64)
    }

    /// The covariance, normalised by n - 1 (zero for fewer than two images).
    pub fn covariance(&self) -> Tensor {
        if self.count < 2 {
            return self.outer.zeros_like();
        }
        let n = self.count as f64;
        let mean = self.mean();
        (&self.outer - mean.outer(&mean) * n) / (n - 1.0)
    }

    /// The mean second moment `E[x x^T]`.
    fn second_moment(&self) -> Tensor {
        &self.outer / (self.count.max(1) as f64)
    }
}

/// The Fréchet distance between two Gaussians (means `[d]`, covariances `[d, d]`), in f64:
/// `|mu1 - mu2|^2 + tr(s1) + tr(s2) - 2 tr((s1^1/2 s2 s1^1/2)^1/2)`, never negative.
pub fn frechet_distance(mu1: &Tensor, s1: &Tensor, mu2: &Tensor, s2: &Tensor) -> f64 {
    let d = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
    let (mu1, s1, mu2, s2) = (d(mu1), d(s1), d(mu2), d(s2));
    let root = psd_sqrt(&s1);
    let middle = root.matmul(&s2).matmul(&root);
    let (eigenvalues, _) = symmetric(&middle).linalg_eigh("L");
    let cross = eigenvalues.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]);
    let trace = |s: &Tensor| s.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
    let means = (&mu1 - &mu2).square().sum(Kind::Double).double_value(&[]);
    (means + trace(&s1) + trace(&s2) - 2.0 * cross).max(0.0)
}

fn symmetric(a: &Tensor) -> Tensor {
    (a + a.transpose(0, 1)) / 2.0
}

/// The symmetric square root of a positive semi-definite matrix; negative eigenvalues (rounding)
/// count as 0.
fn psd_sqrt(a: &Tensor) -> Tensor {
    let (eigenvalues, vectors) = symmetric(a).linalg_eigh("L");
    (&vectors * eigenvalues.clamp_min(0.0).sqrt().unsqueeze(0)).matmul(&vectors.transpose(0, 1))
}

/// The Fréchet distance between two sets' statistics; None when either is empty.
pub fn stats_distance(a: &Stats, b: &Stats) -> Option<f64> {
    (a.count > 0 && b.count > 0).then(|| frechet_distance(&a.mean(), &a.covariance(), &b.mean(), &b.covariance()))
}

/// The Fréchet distance between the class-balanced mixtures of `a` and `b`, over the classes
/// with images on both sides; None when there is none.
pub fn mixture_distance(a: &[Stats], b: &[Stats]) -> Option<f64> {
    let both: Vec<usize> = (0..a.len().min(b.len()))
        .filter(|&k| a[k].count > 0 && b[k].count > 0)
        .collect();
    if both.is_empty() {
        return None;
    }
    let mixture = |side: &[Stats]| {
        let n = both.len() as f64;
        let mean = both
            .iter()
            .map(|&k| side[k].mean())
            .fold(side[0].sum.zeros_like(), |acc, m| acc + m)
            / n;
        let moment = both
            .iter()
            .map(|&k| side[k].second_moment())
            .fold(side[0].outer.zeros_like(), |acc, m| acc + m)
            / n;
        let covariance = moment - mean.outer(&mean);
        (mean, covariance)
    };
    let ((ma, sa), (mb, sb)) = (mixture(a), mixture(b));
    Some(frechet_distance(&ma, &sa, &mb, &sb))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(values).view(shape)
    }

    #[test]
    fn the_distance_between_gaussians_matches_its_closed_form() {
        // Diagonal covariances: |mu1 - mu2|^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2
        // = (1^2 + 2^2) + ((2 - 1)^2 + (3 - 3)^2) = 6.
        let (mu1, s1) = (t(&[0.0, 0.0], &[2]), t(&[4.0, 0.0, 0.0, 9.0], &[2, 2]));
        let (mu2, s2) = (t(&[1.0, 2.0], &[2]), t(&[1.0, 0.0, 0.0, 9.0], &[2, 2]));
        assert!((frechet_distance(&mu1, &s1, &mu2, &s2) - 6.0).abs() < 1e-9);
        assert!(frechet_distance(&mu1, &s1, &mu1, &s1).abs() < 1e-9);
        // Singular covariances (one image each) still give a finite distance: the means' part.
        let zero = t(&[0.0; 4], &[2, 2]);
        assert!((frechet_distance(&mu1, &zero, &mu2, &zero) - 5.0).abs() < 1e-9);
    }

    #[test]
    fn statistics_give_the_mean_and_the_unbiased_covariance() {
        let mut stats = Stats::new(2);
        stats.add(&t(&[1.0, 0.0, 3.0, 2.0], &[2, 2]).to_kind(Kind::Float));
        stats.add(&t(&[5.0, 4.0], &[1, 2]).to_kind(Kind::Float));
        assert_eq!(stats.count(), 3);
        // Columns (1, 3, 5) and (0, 2, 4): means 3 and 2, variances and covariance 4.
        assert!(stats.mean().allclose(&t(&[3.0, 2.0], &[2]), 1e-12, 1e-12, false));
        assert!(stats.covariance().allclose(&t(&[4.0; 4], &[2, 2]), 1e-12, 1e-12, false));
        let empty = Stats::new(2);
        assert_eq!(stats_distance(&stats, &empty), None);
        assert_eq!(stats_distance(&stats, &stats).map(|d| d < 1e-6), Some(true));
        assert_eq!(mixture_distance(&[stats], &[empty]), None);
    }
}

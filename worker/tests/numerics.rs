//! The model, the gradient penalty and Adam against PyTorch eager. The reference values are
//! computed by `worker/python/gantry_ref.py check` (the `.venv` torch) from the very weights and
//! inputs this test writes, so any change on either side is caught.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};
use worker::adam::AdamConfig;
use worker::checkpoint::{from_safetensors, to_safetensors};
use worker::gan::{Gan, StepConfig};
use worker::model::{ModelSpec, one_hot};

use crate::util::repo_root;

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

#[test]
fn generator_critic_gradient_penalty_and_adam_match_pytorch() {
    let _serial = crate::util::exclusive();
    let spec = ModelSpec {
        image_size: 16,
        channels: 3,
        classes: 3,
        z_dim: 8,
        width: 8,
        dropout: 0.0,
    };
    let adam = AdamConfig {
        lr: 1e-3,
        beta1: 0.5,
        beta2: 0.9,
        eps: 1e-7,
    };
    let gp_weight = 10.0;
    let gan = Gan::new(
        spec,
        Device::Cpu,
        adam,
        StepConfig {
            critic_steps: 1,
            gp_weight,
        },
        3,
    );
    let weights_g = gan.generator_tensors();
    let weights_c: HashMap<String, Tensor> = gan.critic_tensors().into_iter().map(|(k, v)| (k, v.copy())).collect();
    tch::manual_seed(11);
    let batch = 5;
    let real = Tensor::rand([batch, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let fake_in = Tensor::rand([batch, 3, 16, 16], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let z = Tensor::randn([batch, 8], (Kind::Float, Device::Cpu));
    let alpha = Tensor::rand([batch], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&[0i64, 2, 1, 1, 0]);

    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    for (name, t) in &weights_g {
        inputs.push((format!("g.{name}"), t.copy()));
    }
    for (name, t) in &weights_c {
        inputs.push((format!("c.{name}"), t.copy()));
    }
    for (name, t) in [
        ("real", &real),
        ("fake_in", &fake_in),
        ("z", &z),
        ("alpha", &alpha),
        ("labels", &labels),
    ] {
        inputs.push((name.to_string(), t.copy()));
    }
    inputs.push(("spec".into(), Tensor::from_slice(&[16i64, 3, 3, 8, 8])));
    inputs.push(("gp_weight".into(), Tensor::from_slice(&[gp_weight])));
    inputs.push((
        "adam".into(),
        Tensor::from_slice(&[adam.lr, adam.beta1, adam.beta2, adam.eps]),
    ));
    let dir = tempfile::tempdir().unwrap();
    let (input_path, output_path) = (dir.path().join("in.safetensors"), dir.path().join("out.safetensors"));
    std::fs::write(&input_path, to_safetensors(inputs.iter().map(|(n, t)| (n, t))).unwrap()).unwrap();
    let root = repo_root();
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("worker/python/gantry_ref.py"))
        .args(["check", input_path.to_str().unwrap(), output_path.to_str().unwrap()])
        .status()
        .expect("run the PyTorch reference (deploy/bootstrap.sh installs .venv)");
    assert!(status.success(), "reference script failed");
    let expected: HashMap<String, Tensor> =
        from_safetensors(&std::fs::read(&output_path).unwrap(), "reference", "output").unwrap();

    let onehot = one_hot(&labels, 3);
    // Generator in training mode: batch statistics, running statistics updated.
    let fake = gan.generator.forward(&z, &onehot, true);
    let running_mean = &gan.generator_tensors()["input_bn.running_mean"];
    assert!(max_abs_diff(&fake, &expected["fake"]) < 1e-5, "generator output");
    assert!(
        max_abs_diff(running_mean, &expected["running_mean"]) < 1e-6,
        "BatchNorm running mean"
    );
    let scores = gan.critic.forward(&real, &onehot, true);
    assert!(max_abs_diff(&scores, &expected["scores"]) < 1e-5, "critic scores");

    let (c_loss, c_wass, c_gp) = gan.critic_losses(&real, &fake_in, &alpha, &onehot);
    let losses = Tensor::stack(&[c_loss, c_wass, c_gp], 0);
    let diff = max_abs_diff(&losses, &expected["losses"]);
    assert!(
        diff < 1e-4,
        "c_loss, c_wass_loss, c_gp differ by {diff}: {losses} vs {}",
        expected["losses"]
    );

    // Two Adam steps of the critic on the penalised loss (double backward included).
    let mut params: Vec<(String, Tensor)> = gan
        .critic_tensors()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    let mut opt = worker::adam::Adam::new(
        params.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect(),
        adam,
    );
    for _ in 0..2 {
        let (c_loss, _, _) = gan.critic_losses(&real, &fake_in, &alpha, &onehot);
        let grads = Tensor::run_backward(&[&c_loss], &opt.params(), false, false);
        opt.step(&grads);
    }
    for (name, p) in &params {
        let reference = &expected[&format!("after.{name}")];
        let moved = max_abs_diff(&weights_c[name], reference);
        let diff = max_abs_diff(p, reference);
        // The score's bias cancels in mean C(fake) - mean C(real) and does not reach the input
        // gradient of the penalty: its gradient is exactly zero, so Adam leaves it in place.
        if name == "output.bias" {
            assert!(
                moved == 0.0 && diff == 0.0,
                "{name} moved by {moved} (differs by {diff})"
            );
            continue;
        }
        assert!(moved > 1e-5, "{name} did not move in the reference");
        assert!(
            diff < 1e-5,
            "{name} after two Adam steps differs by {diff} (moved {moved})"
        );
    }
}

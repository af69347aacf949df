//! How the release `worker` links libtorch, and the stripped copy `deploy/dist.sh` ships to GPU
//! nodes: libtorch's CUDA backend among its NEEDED entries, and the shipped worker finding
//! libtorch through its launcher from any folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use object::Endianness;
use object::elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH, FileHeader64};
use object::read::elf::FileHeader;

use crate::cluster::Scratch;
use crate::util::*;

/// libtorch's CUDA backend: what `worker/build.rs` links with `--no-as-needed`.
const CUDA_BACKEND: [&str; 2] = ["libtorch_cuda.so", "libc10_cuda.so"];

/// The dynamic section of an ELF binary: what the loader reads.
struct Dynamic {
    /// `DT_NEEDED`: the shared libraries it loads, by file name.
    needed: Vec<String>,
    /// `DT_RUNPATH` (or the older `DT_RPATH`): the folders searched for them.
    runpath: Vec<PathBuf>,
}

fn dynamic_section(binary: &Path) -> Dynamic {
    let data = std::fs::read(binary).unwrap();
    let header = FileHeader64::<Endianness>::parse(&*data).expect("a 64-bit ELF binary");
    let endian = header.endian().unwrap();
    let sections = header.sections(endian, &*data).unwrap();
    let table = sections.dynamic_table(endian, &*data).unwrap();
    let mut dynamic = Dynamic {
        needed: Vec::new(),
        runpath: Vec::new(),
    };
    for entry in &table {
        let text = || String::from_utf8(table.string(entry).unwrap().to_vec()).unwrap();
        if entry.tag == DT_NEEDED {
            dynamic.needed.push(text());
        } else if entry.tag == DT_RUNPATH || entry.tag == DT_RPATH {
            dynamic.runpath.extend(text().split(':').map(PathBuf::from));
        }
    }
    dynamic
}

/// The libtorch folder the release worker was linked against: the entry of its RUNPATH (baked by
/// `worker/build.rs` from torch-sys) that holds `libtorch_cpu.so`.
fn libtorch_folder(worker: &Path, dynamic: &Dynamic) -> PathBuf {
    dynamic
        .runpath
        .iter()
        .find(|folder| folder.join("libtorch_cpu.so").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no folder of {}'s RUNPATH {:?} holds libtorch_cpu.so (worker/build.rs bakes it)",
                worker.display(),
                dynamic.runpath
            )
        })
        .clone()
}

fn has_cuda_backend(libtorch: &Path) -> bool {
    CUDA_BACKEND.iter().all(|file| libtorch.join(file).is_file())
}

#[test]
fn the_release_worker_links_libtorchs_cuda_backend_when_libtorch_has_one() {
    let worker = bin("worker");
    let dynamic = dynamic_section(&worker);
    let libtorch = libtorch_folder(&worker, &dynamic);
    let has_backend = has_cuda_backend(&libtorch);
    println!(
        "libtorch folder: {} ({})",
        libtorch.display(),
        if has_backend {
            "with its CUDA backend"
        } else {
            "CPU only"
        }
    );
    println!("NEEDED of {}: {:?}", worker.display(), dynamic.needed);
    assert!(
        dynamic.needed.iter().any(|lib| lib == "libtorch_cpu.so"),
        "{} does not need libtorch_cpu.so: NEEDED {:?}",
        worker.display(),
        dynamic.needed
    );
    if has_backend {
        for file in CUDA_BACKEND {
            assert!(
                dynamic.needed.iter().any(|lib| lib == file),
                "{} does not need {file}, which libtorch at {} has: it would run on the CPU only \
                 (the linker drops unreferenced libraries; see worker/build.rs). NEEDED {:?}",
                worker.display(),
                libtorch.display(),
                dynamic.needed
            );
        }
    }
}

/// Ships the release worker with `deploy/dist.sh` and moves the result to `<dir>/node/gantry`,
/// as a copy to another machine would; returns that folder.
fn ship(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let release = bin("worker").parent().unwrap().to_path_buf();
    let built = dir.join("build/dist");
    ok(run_with(
        Command::new("bash")
            .arg(repo.join("deploy/dist.sh"))
            .arg("--from")
            .arg(&release)
            .arg("--out")
            .arg(&built)
            .arg("worker"),
    ));
    let node = dir.join("node/gantry");
    std::fs::create_dir_all(node.parent().unwrap()).unwrap();
    std::fs::rename(&built, &node).unwrap();
    let shipped = node.join("libexec/worker");
    let size = std::fs::metadata(&shipped).unwrap().len();
    println!("shipped worker: {} bytes", size);
    assert!(size < 48 << 20, "the shipped worker is {size} bytes: is it stripped?");
    assert!(node.join("gpu-check.sh").is_file());
    node
}

/// The shipped launcher with an environment as bare as a fresh node's: no `LD_LIBRARY_PATH`,
/// no `.venv` on `PATH`, only `GANTRY_LIBTORCH`; run from `cwd`.
fn shipped_worker(node: &Path, libtorch: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(node.join("bin/worker"));
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GANTRY_LIBTORCH", libtorch)
        .current_dir(cwd);
    command
}

#[test]
fn the_shipped_worker_trains_a_step_from_another_folder_with_only_gantry_libtorch() {
    let scratch = Scratch::new();
    let node = ship(scratch.dir.path());
    let libtorch = libtorch_folder(&bin("worker"), &dynamic_section(&bin("worker")));
    // Reach libtorch through another path than the RUNPATH baked into the build (a link to the
    // folder two levels up, so `site-packages/nvidia` stays its sibling): the library paths the
    // worker reports then show that it loaded libtorch where the launcher pointed it.
    let top = libtorch.parent().unwrap();
    let link = scratch.path("elsewhere-site");
    std::os::unix::fs::symlink(top.parent().unwrap(), &link).unwrap();
    let moved = link.join(top.file_name().unwrap()).join(libtorch.file_name().unwrap());
    let cwd = scratch.path("cwd");
    std::fs::create_dir(&cwd).unwrap();

    let report = ok(run_with(shipped_worker(&node, &moved, &cwd).arg("device")));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let loaded = report["libtorch_library"].as_str().unwrap();
    assert!(
        Path::new(loaded).starts_with(&moved),
        "libtorch loaded from {loaded}, not from GANTRY_LIBTORCH={}",
        moved.display()
    );
    assert_eq!(report["cuda_backend_loaded"], has_cuda_backend(&libtorch), "{report:#}");

    let job = scratch.job_file("shipped", 1, 1, "");
    let out = run_with(
        shipped_worker(&node, &moved, &cwd)
            .args(["train", "--config"])
            .arg(&job),
    );
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let checkpoints = scratch.path("runs/shipped/checkpoints");
    assert!(
        checkpoints.join("step-0000001/manifest.json").is_file(),
        "no complete checkpoint of step 1\n{stdout}\n{stderr}"
    );
    let latest = std::fs::read_to_string(checkpoints.join("latest")).unwrap();
    assert!(latest.contains("step-0000001"), "{latest}");
}

#[test]
fn the_launcher_refuses_another_libtorch_version_and_a_cpu_only_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = ship(dir.path());
    let fake = |name: &str, version: &str, libs: &[&str]| {
        let torch = dir.path().join(name).join("torch");
        std::fs::create_dir_all(torch.join("lib")).unwrap();
        std::fs::write(
            torch.join("version.py"),
            format!("__version__ = '{version}'\ndebug = False\n"),
        )
        .unwrap();
        for lib in libs {
            std::fs::write(torch.join("lib").join(lib), "").unwrap();
        }
        torch
    };

    // Another version, given as the torch folder (the launcher takes its lib/).
    let old = fake("old", "2.10.0+cu128", &["libtorch_cpu.so", "libc10.so"]);
    let out = run_with(shipped_worker(&node, &old, dir.path()).arg("device"));
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(127), "{stdout}\n{stderr}");
    assert!(stdout.is_empty(), "the worker ran: {stdout}");
    assert!(
        stderr.contains("needs torch 2.11.x") && stderr.contains("is torch 2.10.0+cu128"),
        "{stderr}"
    );

    // The right version without the CUDA backend, while the build links it.
    let needs = std::fs::read_to_string(node.join("libexec/worker.needs")).unwrap();
    if needs.lines().any(|lib| lib == "libtorch_cuda.so") {
        let cpu = fake("cpu", "2.11.0+cpu", &["libtorch_cpu.so", "libc10.so"]);
        let out = run_with(shipped_worker(&node, &cpu.join("lib"), dir.path()).arg("device"));
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(127), "{stdout}\n{stderr}");
        assert!(
            stderr.contains("needs libtorch_cuda.so") && stderr.contains("CPU-only torch"),
            "{stderr}"
        );
    }
}

//! Links libtorch into the worker's binaries and tests the way they need it at run time.
//!
//! `torch-sys` (declared `links = "tch"`) exports libtorch's library folder as
//! `DEP_TCH_LIBTORCH_LIB` to the build scripts of crates that depend on it directly; from it:
//!
//! - an rpath to that folder, so the binaries run in this checkout without `LD_LIBRARY_PATH`;
//! - libtorch's CUDA backend (`libtorch_cuda.so`, `libc10_cuda.so`) as explicit dependencies, when
//!   the folder has them. Nothing in our code or in tch calls into those libraries: their static
//!   initialisers register the CUDA backend with `libtorch_cpu.so`. rustc links with
//!   `--as-needed`, which drops a library no symbol is taken from, so without `--no-as-needed`
//!   around them the binaries silently run on the CPU only (tch-rs issue 980). A CPU-only libtorch
//!   has neither file and builds as before.
//!
//! `cargo:rustc-link-arg` reaches every binary, test and bench of this crate, and rustc places
//! these arguments after the libraries of the crate graph (torch-sys's `-ltorch_cuda` included,
//! which `--as-needed` discards), so the `--no-as-needed` mention below is the one that counts.
//! `tests/tests/linkage.rs` checks the NEEDED entries of the release `worker`.
//!
//! It also compiles the collectives shim (`csrc/`, see `src/collective/`) against libtorch's
//! headers (the folder `../include` beside the library folder):
//!
//! - `collective.cpp`: c10d's TCPStore and ProcessGroupGloo. libtorch's Gloo backend includes
//!   gloo's own headers, which the torch wheel does not ship: they come from the system
//!   (`libgloo-dev`, installed by `deploy/bootstrap.sh`) or `GANTRY_GLOO_INCLUDE`. Only
//!   declarations are used: libtorch holds every gloo object behind a pointer and carries its own
//!   gloo, so the system's gloo library is never linked.
//! - `collective_nccl.cpp`: ProcessGroupNCCL, built for real when libtorch has its CUDA backend and
//!   the CUDA runtime and NCCL headers are found (the `nvidia-*` wheels beside torch, `CUDA_HOME`,
//!   `/usr/local/cuda`, `GANTRY_CUDA_INCLUDE`); otherwise a stub, and `GANTRY_NCCL_STATUS` tells
//!   the crate why NCCL is missing.

use std::path::{Path, PathBuf};

/// The CUDA backend's libraries, in dependency order (`libtorch_cuda.so` needs `libc10_cuda.so`).
const CUDA_BACKEND: [&str; 2] = ["torch_cuda", "c10_cuda"];

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!(
            "torch-sys did not report libtorch's library folder (DEP_TCH_LIBTORCH_LIB): the \
             collectives shim cannot be compiled"
        );
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // The crate's own tests compare the process's loaded libraries with this folder.
    println!("cargo:rustc-env=GANTRY_LIBTORCH_LIB={lib}");

    let present: Vec<&str> = CUDA_BACKEND
        .into_iter()
        .filter(|name| Path::new(&lib).join(format!("lib{name}.so")).is_file())
        .collect();
    // A wheel reinstalled in place (CPU-only <-> CUDA) keeps the folder's path: watch its content.
    println!("cargo:rerun-if-changed={lib}");
    let cuda_backend = present.len() == CUDA_BACKEND.len();
    if cuda_backend {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for name in CUDA_BACKEND {
            println!("cargo:rustc-link-arg=-l{name}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    } else if !present.is_empty() {
        println!("cargo:warning=libtorch in {lib} has only part of its CUDA backend ({present:?}); linking none of it");
    }
    build_collectives(Path::new(&lib), cuda_backend);
}

/// Compiles `csrc/` into a static library linked into the crate, with NCCL when `cuda_backend`
/// and the CUDA and NCCL headers allow it.
fn build_collectives(lib: &Path, cuda_backend: bool) {
    for file in ["collective.h", "collective.cpp", "collective_nccl.cpp"] {
        println!("cargo:rerun-if-changed=csrc/{file}");
    }
    for var in [
        "GANTRY_GLOO_INCLUDE",
        "GANTRY_CUDA_INCLUDE",
        "CUDA_HOME",
        "LIBTORCH_CXX11_ABI",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let include = lib.parent().map(|torch| torch.join("include")).unwrap_or_default();
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .is_file()
    {
        panic!(
            "libtorch's c10d headers are missing: no {}; gantry needs the torch wheel's include folder",
            include
                .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
                .display()
        );
    }
    let gloo = header_folder(
        "gloo/algorithm.h",
        &env_folders("GANTRY_GLOO_INCLUDE", &system_include()),
    )
    .unwrap_or_else(|| {
        panic!(
            "gloo's headers (gloo/algorithm.h) are not installed: libtorch's Gloo backend needs \
                 them to compile the collectives shim. Run deploy/bootstrap.sh (it installs the \
                 Debian package libgloo-dev as root), or set GANTRY_GLOO_INCLUDE to a folder holding gloo/"
        )
    });

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++17")
        .define(
            "_GLIBCXX_USE_CXX11_ABI",
            std::env::var("LIBTORCH_CXX11_ABI")
                .unwrap_or_else(|_| "1".to_string())
                .as_str(),
        )
        .define("USE_C10D_GLOO", None)
        .define("GLOG_USE_GLOG_EXPORT", None)
        .files(["csrc/collective.cpp", "csrc/collective_nccl.cpp"]);
    // Warnings in our files only: libtorch's headers and gloo's are system headers here. The
    // compiler's own folders stay implicit (naming /usr/include again breaks `#include_next`).
    let mut folders = vec![include.clone(), include.join("torch/csrc/api/include")];
    if !system_include().contains(&gloo) {
        folders.push(gloo);
    }
    for folder in folders {
        build
            .flag("-isystem")
            .flag(folder.to_str().expect("UTF-8 include path"));
    }

    let nccl = if !cuda_backend {
        Err(format!("libtorch in {} has no CUDA backend", lib.display()))
    } else {
        nccl_includes(lib)
    };
    match &nccl {
        Ok(folders) => {
            build
                .define("USE_C10D_NCCL", None)
                .define("USE_CUDA", None)
                .define("GANTRY_WITH_NCCL", None);
            for folder in folders {
                build
                    .flag("-isystem")
                    .flag(folder.to_str().expect("UTF-8 include path"));
            }
            println!("cargo:rustc-env=GANTRY_NCCL_STATUS=built");
        }
        Err(why) => {
            println!("cargo:warning=collectives: NCCL not built in ({why}); Gloo only");
            println!("cargo:rustc-env=GANTRY_NCCL_STATUS={why}");
        }
    }
    build.compile("gantry_collective");
    // After the static library: the libtorch libraries its symbols come from.
    for name in ["torch_cpu", "c10"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
    if nccl.is_ok() {
        for name in CUDA_BACKEND {
            println!("cargo:rustc-link-lib=dylib={name}");
        }
    }
}

/// The include folders holding the CUDA runtime's and NCCL's headers, or why there are none.
fn nccl_includes(lib: &Path) -> Result<Vec<PathBuf>, String> {
    let mut candidates = Vec::new();
    // The CUDA torch wheel's own dependencies: site-packages/nvidia/<package>/include.
    if let Some(site_packages) = lib.parent().and_then(Path::parent)
        && let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia"))
    {
        let mut folders: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("include")).collect();
        folders.sort();
        candidates.extend(folders.into_iter().filter(|f| f.is_dir()));
    }
    if let Ok(home) = std::env::var("CUDA_HOME") {
        candidates.push(Path::new(&home).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    let candidates = env_folders("GANTRY_CUDA_INCLUDE", &candidates);
    let mut folders = Vec::new();
    // CUDA 13 moved crt/ (included by cuda_runtime.h) and nv/target (by cuda_fp16.h) into wheels
    // of their own, nvidia-cuda-crt and nvidia-cuda-cccl.
    for header in ["cuda_runtime_api.h", "crt/host_config.h", "nv/target", "nccl.h"] {
        match header_folder(header, &candidates) {
            Some(folder) => {
                if !folders.contains(&folder) {
                    folders.push(folder);
                }
            }
            None => {
                return Err(format!(
                    "no {header} in the {} CUDA include folders searched (GANTRY_CUDA_INCLUDE, the torch \
                     wheel's nvidia-*/include, CUDA_HOME, /usr/local/cuda); deploy/bootstrap.sh installs \
                     the missing headers",
                    candidates.len()
                ));
            }
        }
    }
    // libtorch's CUDA headers include the other libraries' headers (cuBLAS, cuSPARSE, ...) that
    // live in the same wheels: keep every candidate after the ones that matter.
    for folder in candidates {
        if folder.is_dir() && !folders.contains(&folder) {
            folders.push(folder);
        }
    }
    Ok(folders)
}

/// The folders of the colon-separated variable `var` first, then `defaults`.
fn env_folders(var: &str, defaults: &[PathBuf]) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = std::env::var(var)
        .map(|value| value.split(':').filter(|s| !s.is_empty()).map(PathBuf::from).collect())
        .unwrap_or_default();
    folders.extend_from_slice(defaults);
    folders
}

/// The C compiler's default include folders that gantry looks in for gloo.
fn system_include() -> Vec<PathBuf> {
    vec![PathBuf::from("/usr/local/include"), PathBuf::from("/usr/include")]
}

/// The first folder of `folders` that holds `header`.
fn header_folder(header: &str, folders: &[PathBuf]) -> Option<PathBuf> {
    folders.iter().find(|folder| folder.join(header).is_file()).cloned()
}

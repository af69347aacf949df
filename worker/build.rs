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

use std::path::Path;

/// The CUDA backend's libraries, in dependency order (`libtorch_cuda.so` needs `libc10_cuda.so`).
const CUDA_BACKEND: [&str; 2] = ["torch_cuda", "c10_cuda"];

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
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
    if present.len() < CUDA_BACKEND.len() {
        if !present.is_empty() {
            println!(
                "cargo:warning=libtorch in {lib} has only part of its CUDA backend ({present:?}); linking none of it"
            );
        }
        return;
    }
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for name in CUDA_BACKEND {
        println!("cargo:rustc-link-arg=-l{name}");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
}

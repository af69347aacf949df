//! Bakes an rpath to libtorch's library folder into the worker's binaries and tests, so they run
//! without `LD_LIBRARY_PATH`. `torch-sys` (declared `links = "tch"`) exports the folder to the build
//! scripts of crates that depend on it directly.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}

//! Link options of the static agent (`make agent-static`, crt-static).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && features.split(',').any(|f| f == "crt-static") {
        // A static PIE relocates itself at start; its 13,000 relative
        // relocations take 325 KB as RELA entries and about 10 KB packed as
        // RELR (binutils 2.38, glibc 2.36), which glibc's static start-up
        // applies the same way. The executable keeps its ASLR.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

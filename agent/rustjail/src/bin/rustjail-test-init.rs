//! Launcher used by rustjail's own tests: it only runs the container helper.

fn main() {
    rustjail::helper::run_if_requested();
    eprintln!(
        "rustjail-test-init: expected the argument {:?}",
        rustjail::helper::INIT_ARG
    );
    std::process::exit(2);
}

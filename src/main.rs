//! The `barkeep` binary: parse the command line, dispatch, turn the outcome
//! into an exit code. All the work lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`barkeep export … | head`), as Unix tools do.
    // SAFETY: called first in main, before any thread exists.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    barkeep::cli::main()
}

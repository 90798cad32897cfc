//! The `barkeep` binary: parse the command line, dispatch, turn the outcome
//! into an exit code. All the work lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    barkeep::cli::main()
}

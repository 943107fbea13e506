//! `cometmesh`: see the `cometmesh_cli` crate docs.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;
use clap::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match cometmesh_cli::args::Cli::try_parse() {
        Ok(cli) => cli,
        // A bad flag value is one line naming the flag and the value; other usage errors
        // (missing or unknown arguments) keep clap's usage text. Both exit with code 2.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("error: invalid value");
            eprintln!("{first}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cometmesh_cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error carries.
            let line = e.to_string().replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::from(e.exit_code())
        }
    }
}

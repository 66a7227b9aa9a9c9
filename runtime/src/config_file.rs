//! An optional settings file, for deployments that prefer a file to environment variables:
//! one `NAME=value` per line, NAME being a setting's environment variable
//! (`TILLSTREAM_NATS_URL=nats://nats:4222`), with `#` comments — the format of Docker's
//! `--env-file` and systemd's `EnvironmentFile`, so one file serves every way of running
//! tillstream. Every setting and its variable is in docs/configuration.md.
//!
//! Precedence: a flag, then the environment, then the file, then the default. The file is
//! read by [`load`] before the command line is parsed and before any thread starts.

use std::path::PathBuf;

/// Declares `--config-file` for `--help` (it is read by [`load`], before parsing).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigFile {
    /// Settings file of `NAME=value` lines, NAME being a setting's environment variable;
    /// flags and the environment take precedence over it.
    #[arg(long = "config-file", env = "TILLSTREAM_CONFIG_FILE", global = true)]
    pub config_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the settings file {path}: {source}")]
pub struct ConfigFileError {
    path: PathBuf,
    #[source]
    source: dotenvy::Error,
}

/// The file named by `--config-file PATH` (or `--config-file=PATH`) in `args`, else by
/// `TILLSTREAM_CONFIG_FILE`.
fn named(args: impl IntoIterator<Item = String>) -> Option<PathBuf> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--config-file" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config-file=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("TILLSTREAM_CONFIG_FILE").map(PathBuf::from)
}

/// Sets the environment variables of the settings file this process was given, except
/// those already set. Call first thing in `main`, while the process has a single thread
/// (changing the environment is only sound then); returns the file read, if any.
pub fn load() -> Result<Option<PathBuf>, ConfigFileError> {
    let Some(path) = named(std::env::args().skip(1)) else {
        return Ok(None);
    };
    dotenvy::from_path(&path).map_err(|source| ConfigFileError {
        path: path.clone(),
        source,
    })?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_named_by_flag_in_either_form() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            named(args(&["up", "--config-file", "a.env"])),
            Some(PathBuf::from("a.env"))
        );
        assert_eq!(
            named(args(&["--config-file=b.env", "--x"])),
            Some(PathBuf::from("b.env"))
        );
    }
}

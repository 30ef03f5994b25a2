//! The configuration file (`--config FILE` or `HERALD_CONFIG`): TOML, one key per flag of
//! `serve`, spelled as the flag (README.md#configuration-file). It is one more source for clap:
//! each key whose flag was given neither on the command line nor in the environment becomes
//! that flag, so precedence is flags, then environment, then the file, then the defaults, and
//! every value is parsed and checked by the same code as a flag's.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;

/// The id of the `--config` flag.
pub const CONFIG_ID: &str = "config";

/// Where each effective setting came from, for messages and `herald check-config`.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// The file read, if any.
    pub file: Option<PathBuf>,
    /// The keys the file decided (a key the command line or environment also gave is not here).
    pub from_file: Vec<String>,
}

impl Provenance {
    /// How to name `flag` in a message about its value: the file's key, when the file gave it.
    pub fn name(&self, flag: &str) -> String {
        match &self.file {
            Some(file) if self.from_file.iter().any(|key| key == flag) => {
                format!("{}: key `{flag}`", file.display())
            }
            _ => format!("--{flag}"),
        }
    }
}

/// Why the file could not be used; each names the file, and the key when one is at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("{}: cannot read it: {reason}", file.display())]
    Unreadable { file: PathBuf, reason: String },
    #[error("{}: not TOML: {reason}", file.display())]
    NotToml { file: PathBuf, reason: String },
    #[error("{}: unknown key `{key}` (keys are the flags of `herald serve`, e.g. `data-dir`)", file.display())]
    UnknownKey { file: PathBuf, key: String },
    #[error("{}: key `{key}`: {reason}", file.display())]
    BadValue {
        file: PathBuf,
        key: String,
        reason: String,
    },
}

/// `argv` with the file's settings added as flags, where `serve` (the command whose arguments
/// `matches` are, parsed from `argv` without the file) takes flags; unchanged when no file is
/// named. `serve` must have the `--config` flag.
pub fn layer(
    serve: &clap::Command,
    matches: &clap::ArgMatches,
    mut argv: Vec<OsString>,
) -> Result<(Vec<OsString>, Provenance), FileError> {
    let Some(file) = matches.get_one::<PathBuf>(CONFIG_ID).cloned() else {
        return Ok((argv, Provenance::default()));
    };
    let table = read(&file)?;
    let mut provenance = Provenance {
        file: Some(file.clone()),
        from_file: Vec::new(),
    };
    for (key, value) in table {
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && arg.get_id() != CONFIG_ID)
            .ok_or_else(|| FileError::UnknownKey {
                file: file.clone(),
                key: key.clone(),
            })?;
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        let flags = as_flags(&key, &value, arg.get_action().takes_values()).map_err(|reason| {
            FileError::BadValue {
                file: file.clone(),
                key: key.clone(),
                reason,
            }
        })?;
        if given {
            continue;
        }
        argv.extend(flags);
        provenance.from_file.push(key);
    }
    Ok((argv, provenance))
}

fn read(file: &Path) -> Result<BTreeMap<String, toml::Value>, FileError> {
    let text = std::fs::read_to_string(file).map_err(|error| FileError::Unreadable {
        file: file.to_owned(),
        reason: error.to_string(),
    })?;
    toml::from_str(&text).map_err(|error: toml::de::Error| FileError::NotToml {
        file: file.to_owned(),
        reason: error.message().to_owned(),
    })
}

/// One key's value as the flags that say the same: `key = true` is `--key`, `false` nothing;
/// a string, number or date is `--key=VALUE`; a list is the flag once per item.
fn as_flags(key: &str, value: &toml::Value, takes_value: bool) -> Result<Vec<OsString>, String> {
    let flag = |text: String| OsString::from(format!("--{key}={text}"));
    match (value, takes_value) {
        (toml::Value::Boolean(on), false) => Ok(if *on {
            vec![OsString::from(format!("--{key}"))]
        } else {
            Vec::new()
        }),
        (_, false) => Err("expected true or false".into()),
        (toml::Value::Array(items), true) => items
            .iter()
            .map(|item| scalar(item).map(flag))
            .collect::<Result<Vec<_>, _>>(),
        (value, true) => Ok(vec![flag(scalar(value)?)]),
    }
}

fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Datetime(at) => Ok(at.to_string()),
        toml::Value::Array(_) => Err("a list is not allowed here".into()),
        toml::Value::Table(_) => Err("a table is not allowed here".into()),
    }
}

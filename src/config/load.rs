//! SKELETON: parsing and validation with file:line:key errors.
use std::fmt;
use std::path::Path;

use super::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file, self.line, self.column, self.key, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub fn parse_str(_text: &str, file: &str) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors(vec![ConfigError { file: file.into(), line: 1, column: 1, key: "".into(), message: "not implemented".into() }]))
}

pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError { file: name.clone(), line: 0, column: 0, key: String::new(), message: e.to_string() }])
    })?;
    parse_str(&text, &name)
}

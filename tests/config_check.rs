//! The example configs in `board/` are valid, and every broken config in
//! `tests/configs/broken/` yields exactly the errors its sibling `.expect` file lists
//! (one `line:key` per line; `#` comments and blank lines ignored). Checked both through the
//! library and through `roipd check`, which must exit 0 and 2 respectively.
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `*.toml` in a folder (relative to the crate root), sorted, never empty.
/// The .toml files in `dir` and, for `board`, in its per-board folders too.
fn tomls(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(root().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        if path.is_dir() && dir == "board" {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(path);
        }
    }
    files.retain(|p| p.extension().is_some_and(|x| x == "toml"));
    files.sort();
    assert!(!files.is_empty(), "no .toml files in {dir}");
    files
}

/// The `line:key` pairs a broken file must produce, sorted.
fn expected(file: &Path) -> Vec<String> {
    let path = file.with_extension("expect");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut want: Vec<String> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    assert!(!want.is_empty(), "{} lists no errors", path.display());
    want.sort();
    want
}

/// `line:key` of each `file:line:column: key: message` line of `roipd check` stderr, sorted.
/// The last line is the error count, not an error.
fn reported(stderr: &str, file: &str) -> Vec<String> {
    let mut got: Vec<String> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(file)?.strip_prefix(':'))
        .filter_map(|rest| {
            let mut parts = rest.splitn(4, ": ");
            let position = parts.next()?;
            let key = parts.next()?;
            parts.next()?; // there must be a message
            let (line, _column) = position.split_once(':')?;
            Some(format!("{line}:{key}"))
        })
        .collect();
    got.sort();
    got
}

fn roipd_check(file: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_roipd"))
        .arg("check")
        .arg(file.strip_prefix(root()).unwrap())
        .current_dir(root())
        .output()
        .expect("run roipd")
}

#[test]
fn library_accepts_every_board_config() {
    for file in tomls("board") {
        let text = std::fs::read_to_string(&file).unwrap();
        if let Err(e) = roipd::config::parse_str(&text, &file.display().to_string()) {
            panic!("{} should be valid:\n{e}", file.display());
        }
    }
}

#[test]
fn library_reports_exactly_the_expected_errors() {
    // Check every file before failing, so one run shows every mismatch.
    let mut mismatches = Vec::new();
    for file in tomls("tests/configs/broken") {
        let errors = roipd::config::load_file(&file).expect_err(&file.display().to_string());
        let mut got: Vec<String> = errors.0.iter().map(|e| format!("{}:{}", e.line, e.key)).collect();
        got.sort();
        if got != expected(&file) {
            mismatches.push(format!("{}: expected {:?}, got:\n{errors}", file.display(), expected(&file)));
        }
        for e in &errors.0 {
            assert_eq!(e.file, file.display().to_string());
            assert!(e.line >= 1 && e.column >= 1 && !e.message.is_empty(), "{e}");
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn demo_config_is_the_documented_standalone_box() {
    use roipd::config::PortConfig;
    let c = roipd::config::load_file(&root().join("board/demo-sim.toml")).unwrap();
    assert_eq!(c.channel.keys().collect::<Vec<_>>(), ["ops"]);
    assert_eq!(c.hub.as_ref().unwrap().listen, "127.0.0.1:8080");
    assert_eq!(c.port.len(), 2);
    for port in c.port.values() {
        let PortConfig::Radio(r) = port else { panic!("demo ports are radios") };
        assert_eq!(r.channel, "ops");
        assert!(r.cor.as_ref().unwrap().line.starts_with("sim:") && r.ptt.line.starts_with("sim:"));
    }
}

#[test]
fn roipd_check_accepts_every_board_config() {
    for file in tomls("board") {
        let out = roipd_check(&file);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}:\n{}", file.display(), String::from_utf8_lossy(&out.stderr));
        assert!(
            stdout.contains("device:") && stdout.contains("port "),
            "summary missing for {}:\n{stdout}",
            file.display()
        );
    }
}

#[test]
fn roipd_check_reports_expected_errors_and_exits_2() {
    let mut mismatches = Vec::new();
    for file in tomls("tests/configs/broken") {
        let out = roipd_check(&file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        let want = expected(&file);
        let count = format!("{} error", want.len());
        if out.status.code() != Some(2)
            || reported(&stderr, &name) != want
            || !stderr.lines().last().is_some_and(|l| l.contains(&count))
        {
            mismatches.push(format!(
                "{name}: expected exit 2, {want:?} and a count line, got {:?}:\n{stderr}",
                out.status.code()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

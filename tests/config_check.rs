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
        assert!(
            r.cor.as_ref().unwrap().line.as_ref().unwrap().line.starts_with("sim:") && r.ptt.line.starts_with("sim:")
        );
    }
}

/// A board config with its `/etc/roipd/` files made up in `dir`: tokens, a password, and for
/// MQTT over TLS a CA and a client certificate and key made with `openssl`, so `roipd check`
/// can read every file it names, as it does on the box.
fn board_copy(file: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(file).unwrap().replace("\"/etc/roipd/", &format!("\"{}/", dir.display()));
    let copy = dir.join(file.file_name().unwrap());
    std::fs::write(&copy, &text).unwrap();
    for name in ["uplink.token", "console.token", "mqtt.password", "ops.pin"] {
        std::fs::write(dir.join(name), format!("{name}-secret\n")).unwrap();
    }
    // The fleet key: 32 bytes or more, and private (mode 0600), as `roipd check` demands.
    let key = dir.join("fleet.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    if text.contains("client_key_file") && !dir.join("client.key").exists() {
        let openssl = |args: &str| {
            let ok = Command::new("openssl")
                .args(args.split(' '))
                .current_dir(dir)
                .output()
                .expect("openssl is needed to make test certificates (apt-get install openssl)")
                .status
                .success();
            assert!(ok, "openssl {args}");
        };
        openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out mqtt-ca.pem -days 3650 -subj /CN=test-ca");
        // `req -x509 -CA` (OpenSSL 3) makes a v3 certificate, which rustls requires.
        openssl("req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key -out client.crt -CA mqtt-ca.pem -CAkey ca.key -days 3650 -subj /CN=desk");
    }
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for (key, made) in [("client_cert_file", "client.crt"), ("client_key_file", "client.key")] {
            if let Some(path) = line.trim().strip_prefix(key).and_then(|r| r.split('"').nth(1)) {
                std::fs::copy(dir.join(made), path).unwrap();
            }
        }
    }
    copy
}

#[test]
fn roipd_check_accepts_every_board_config() {
    let dir = tempfile::tempdir().unwrap();
    for board in tomls("board") {
        let file = board_copy(&board, dir.path());
        let out = Command::new(env!("CARGO_BIN_EXE_roipd")).arg("check").arg(&file).output().expect("run roipd");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}:\n{}", board.display(), String::from_utf8_lossy(&out.stderr));
        assert!(
            stdout.contains("device:") && stdout.contains("port "),
            "summary missing for {}:\n{stdout}",
            file.display()
        );
        assert!(stdout.contains("real-time priority for audio threads: "), "no real-time notice:\n{stdout}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("WARNING"), "board examples are secure by default:\n{stderr}");
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

// ---------------------------------------------------------------------------------------------
// `roipd check` and `roipd run` give the same verdict (issue 14 items 7 and 8): what check
// passes starts, what run refuses check refuses, with the same `file:line:column: key` lines.

/// A radio on `ops` with simulated lines; cases append sections.
const BASE: &str = "device_id = \"box\"\n[channel.ops]\n[port.r1]\nkind = \"radio\"\nchannel = \"ops\"\n\
                    cor = { line = \"sim:cor1\" }\nptt = { line = \"sim:ptt1\" }\n";

/// How a `roipd` command ended: its exit code (None: still running after the wait, so it
/// accepted the config and was stopped) and its stderr.
struct Verdict {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn roipd_in(dir: &Path, args: &[&str], wait: std::time::Duration) -> Verdict {
    let (out, err) = (dir.join(format!("{}.out", args[0])), dir.join(format!("{}.err", args[0])));
    let mut child = Command::new(env!("CARGO_BIN_EXE_roipd"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("run roipd");
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        // A daemon that says it runs has accepted the config.
        let up = std::fs::read_to_string(&err).unwrap_or_default().contains("roipd running");
        if up || start.elapsed() > wait {
            // SIGTERM, so the daemon releases its (simulated) PTT as in service.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Verdict { code, stdout: std::fs::read_to_string(out).unwrap(), stderr: std::fs::read_to_string(err).unwrap() }
}

/// The `file:line:column: key: message` lines of `file` in a command's stderr.
/// (Not the count line `file: N errors`.)
fn error_lines(stderr: &str, file: &str) -> Vec<String> {
    let prefix = format!("{file}:");
    stderr
        .lines()
        .filter(|l| l.strip_prefix(&prefix).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())))
        // Security warnings and notes are not errors.
        .filter(|l| !l.contains(": WARNING: ") && !l.contains(": note: "))
        .map(String::from)
        .collect()
}

/// Writes `text` as `box.toml` in `dir`, runs check and run on it, and requires the same verdict.
/// Returns check's error lines (empty when both accepted).
fn same_verdict(dir: &Path, text: &[u8]) -> (Vec<String>, Verdict) {
    std::fs::write(dir.join("box.toml"), text).unwrap();
    let check = roipd_in(dir, &["check", "box.toml"], std::time::Duration::from_secs(20));
    let run = roipd_in(dir, &["run", "box.toml"], std::time::Duration::from_secs(20));
    let check_errors = error_lines(&check.stderr, "box.toml");
    let mut unique = check_errors.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), check_errors.len(), "an error printed twice:\n{}", check.stderr);
    match check.code {
        Some(0) => {
            assert!(check.stdout.contains("box.toml: OK"), "no summary:\n{}", check.stdout);
            assert_eq!(run.code, None, "check passed, run refused:\n{}", run.stderr);
        }
        Some(2) => {
            assert_eq!(run.code, Some(2), "check refused, run did not (exit {:?}):\n{}", run.code, run.stderr);
            assert_eq!(error_lines(&run.stderr, "box.toml"), check_errors, "run:\n{}", run.stderr);
            assert!(!check_errors.is_empty(), "refused without a file:line error:\n{}", check.stderr);
        }
        other => panic!("check ended with {other:?}:\n{}", check.stderr),
    }
    (check_errors, check)
}

fn secret(dir: &Path, name: &str, content: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

fn hub_with_token(dir: &Path, file: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _ = dir;
    format!(
        "{BASE}[hub]\nlisten = \"127.0.0.1:{port}\"\ntoken.t1 = {{ secret_file = \"{file}\", channels = [\"*\"] }}\n"
    )
}

/// One case: the config text, and the `line:key` check must report (empty: both accept).
fn case(name: &str, text: &str, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let text = text.replace("DIR", &dir.path().display().to_string());
    case_in(dir.path(), name, text.as_bytes(), want);
}

fn case_in(dir: &Path, name: &str, text: &[u8], want: &[&str]) {
    let (errors, check) = same_verdict(dir, text);
    let got: Vec<String> = errors
        .iter()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ':');
            let (_, line, _, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some(format!("{line}:{}", rest.trim_start().split(": ").next()?))
        })
        .collect();
    assert_eq!(got, want, "{name}:\n{}", check.stderr);
}

#[test]
fn check_and_run_agree_on_good_configs() {
    let dir = tempfile::tempdir().unwrap();
    let token = secret(dir.path(), "token", b"console-token\n");
    case_in(dir.path(), "hub with a token", hub_with_token(dir.path(), &token).as_bytes(), &[]);
    let pw = secret(dir.path(), "pw", b"s3cret\n");
    let mqtt = format!("{BASE}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword_file = \"{pw}\"\n");
    case_in(dir.path(), "mqtt with a password file", mqtt.as_bytes(), &[]);
}

#[test]
fn check_refuses_what_run_refuses() {
    // Credentials in the MQTT URL: refused, and the password is printed nowhere.
    let dir = tempfile::tempdir().unwrap();
    let text = format!("{BASE}[mqtt]\nurl = \"mqtt://user:hunter2@127.0.0.1:1\"\n");
    case_in(dir.path(), "credentials in the URL", text.as_bytes(), &["9:mqtt.url"]);
    for f in ["check.out", "check.err", "run.out", "run.err"] {
        let out = std::fs::read_to_string(dir.path().join(f)).unwrap();
        assert!(!out.contains("hunter2"), "{f} shows the password:\n{out}");
    }
    // Channel names travel in signaling and MQTT topics.
    let dir = tempfile::tempdir().unwrap();
    let token = secret(dir.path(), "token", b"t\n");
    let text =
        hub_with_token(dir.path(), &token).replace("[channel.ops]", "[channel.\"öps\"]").replace("\"ops\"", "\"öps\"");
    case_in(dir.path(), "non-ASCII channel", text.as_bytes(), &["2:channel.öps"]);
    case("sim line with a slash", &BASE.replace("sim:ptt1", "sim:a/b"), &["7:port.r1.ptt.line"]);
    // TLS files on a plain connection.
    case(
        "ca_file with mqtt://",
        &format!("{BASE}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nca_file = \"/etc/ssl/x.pem\"\n"),
        &["8:mqtt"],
    );
}

#[test]
fn token_files_are_judged_as_the_hub_and_the_edge_judge_them() {
    let dir = tempfile::tempdir().unwrap();
    let long = secret(dir.path(), "long", &[b'a'; 300]);
    case_in(
        dir.path(),
        "hub token over 256 bytes",
        hub_with_token(dir.path(), &long).as_bytes(),
        &["10:hub.token.t1.secret_file"],
    );
    let text = format!("{BASE}[uplink]\nkind = \"hub\"\nurl = \"ws://127.0.0.1:1/ws\"\ntoken_file = \"{long}\"\n");
    case_in(dir.path(), "uplink token over 256 bytes", text.as_bytes(), &["11:uplink.token_file"]);
    let missing = dir.path().join("missing").display().to_string();
    case_in(
        dir.path(),
        "missing token",
        hub_with_token(dir.path(), &missing).as_bytes(),
        &["10:hub.token.t1.secret_file"],
    );
}

#[test]
fn secret_files_are_regular_files_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let status = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo (coreutils) is needed");
    assert!(status.success());
    let big = secret(dir.path(), "big", &vec![b'a'; 100_000]);
    for (name, file) in [
        ("a character device", "/dev/zero".to_string()),
        ("a FIFO", fifo.display().to_string()),
        ("a directory", dir.path().display().to_string()),
        ("a 100 KB file", big),
    ] {
        let start = std::time::Instant::now();
        case_in(dir.path(), name, hub_with_token(dir.path(), &file).as_bytes(), &["10:hub.token.t1.secret_file"]);
        assert!(start.elapsed() < std::time::Duration::from_secs(15), "{name}: took {:?}", start.elapsed());
        let text =
            format!("{BASE}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\nusername = \"gw\"\npassword_file = \"{file}\"\n");
        case_in(dir.path(), name, text.as_bytes(), &["11:mqtt.password_file"]);
    }
}

#[test]
fn invalid_utf8_is_reported_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = b"device_id = \"box\"\n[channel.ops]\nlabel = \"Caf\xe9\"\n";
    let (errors, _) = same_verdict(dir.path(), text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("box.toml:3:13: (file): invalid UTF-8 (byte 0xE9)"), "{errors:?}");
}

/// `roipd demo` on a port something else holds says so, suggests `--listen`, and exits
/// non-zero before printing a console URL that would lead to the other program.
#[test]
fn demo_on_a_busy_port_says_so_before_the_console_url() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = holder.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_roipd"))
        .args(["demo", "--listen", &listen, "--dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&listen) && stderr.contains("--listen"), "{stderr}");
    assert!(!stderr.contains("console at"), "{stderr}");
}

/// `roipd demo` left running does not fill its folder: radio1's transmit recording holds only
/// what radio1 transmitted (`sim:wav-rec`), so it stays put while nobody talks.
#[test]
fn the_demo_recording_does_not_grow_while_the_radio_is_idle() {
    use std::time::{Duration, Instant};
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_roipd"))
        .args(["demo", "--listen", &listen, "--dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let record = dir.path().join("radio1-tx.wav");
    let size = || std::fs::metadata(&record).map(|m| m.len()).ok();
    let until = Instant::now() + Duration::from_secs(20);
    while size().is_none() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The device plays out a few idle frames, then pauses.
    std::thread::sleep(Duration::from_secs(1));
    let (before, t0) = (size(), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let after = size();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let (Some(before), Some(after)) = (before, after) else { panic!("no recording at {}", record.display()) };
    // wav-out grew 96 kB a second here.
    assert!(
        after - before < 20_000,
        "the recording grew {} bytes in {:?} of an idle radio",
        after - before,
        t0.elapsed()
    );
}

/// Issue 15, item 2: `roipd check` warns loudly (config still valid) on a box whose broker is
/// unencrypted, unauthenticated or without a fleet key, each warning at its `file:line`; a fleet
/// key that group or others can read, or that is too short, is an error naming file, key and
/// line; a config with all three is quiet.
#[test]
fn check_warns_on_an_open_broker_and_refuses_a_weak_fleet_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("box.toml");
    let check = |text: String| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_roipd")).arg("check").arg(&file).output().expect("run roipd");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let shown = file.display().to_string();
    let (code, stderr) = check(format!("{BASE}[mqtt]\nurl = \"mqtt://127.0.0.1:1\"\n"));
    assert_eq!(code, Some(0), "{stderr}");
    for want in [
        format!("{shown}:9:7: mqtt.url: WARNING: unencrypted broker"),
        format!("{shown}:8:1: mqtt: WARNING: no broker credentials"),
        // No key and no opt-out: not a security hole (commands that key are refused), a note.
        format!("{shown}:8:1: mqtt: note: no fleet_key_file: MQTT commands that could key a radio"),
        "2 security warnings".to_string(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }

    let key = dir.path().join("fleet.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    let pw = secret(dir.path(), "pw", b"s3cret\n");
    let keyed = |url: &str| {
        format!(
            "{BASE}[mqtt]\nurl = \"{url}\"\nusername = \"box\"\npassword_file = \"{pw}\"\nfleet_key_file = \"{}\"\n",
            key.display()
        )
    };
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = check(keyed("mqtt://127.0.0.1:1"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{shown}:12:")) && stderr.contains("mqtt.fleet_key_file"), "{stderr}");
    assert!(stderr.contains("mode 0644") && stderr.contains("chmod 600"), "{stderr}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, stderr) = check(keyed("mqtt://127.0.0.1:1"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("mqtt.url: WARNING: unencrypted") && stderr.contains("1 security warning "), "{stderr}");
    let (code, stderr) = check(keyed("mqtts://127.0.0.1:1"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("WARNING"), "a secure config is quiet:\n{stderr}");
    std::fs::write(&key, "too short\n").unwrap();
    let (code, stderr) = check(keyed("mqtts://127.0.0.1:1"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("mqtt.fleet_key_file") && stderr.contains("at least 32"), "{stderr}");
}

/// Issue 16: `roipd check` warns (config still valid) when a hub serves plain HTTP on a network
/// address, or an edge reaches its hub over plain ws:// off the box, each at its key's line;
/// loopback, TLS and wss:// are quiet.
#[test]
fn check_warns_on_plain_http_and_ws_off_the_box() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("box.toml");
    let shown = file.display().to_string();
    let token = secret(dir.path(), "token", b"0123456789abcdef0123456789abcdef\n");
    let check = |text: String| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_roipd")).arg("check").arg(&file).output().expect("run roipd");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let hub = |listen: &str, extra: &str| {
        format!(
            "{BASE}[hub]\nlisten = \"{listen}\"\n{extra}token.t1 = {{ secret_file = \"{token}\", channels = [\"*\"] }}\n\
             state_dir = \"{}\"\n",
            dir.path().display()
        )
    };
    for listen in ["0.0.0.0:8080", "192.0.2.7:80", "[::]:8080"] {
        let stderr = check(hub(listen, ""));
        let want = format!("{shown}:9:10: hub.listen: WARNING: plain HTTP on a network address ({listen})");
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
        assert!(stderr.contains("1 security warning above: a stranger on the network"), "{stderr}");
    }
    for (listen, extra) in [("127.0.0.1:8080", ""), ("[::1]:8080", ""), ("0.0.0.0:8443", "tls = true\n")] {
        let stderr = check(hub(listen, extra));
        assert!(!stderr.contains("WARNING"), "{listen} {extra:?} is quiet:\n{stderr}");
    }
    let edge = |url: &str| format!("{BASE}[uplink]\nkind = \"hub\"\nurl = \"{url}\"\ntoken_file = \"{token}\"\n");
    for url in ["ws://192.0.2.7:8080/ws", "http://hub.example.net/ws"] {
        let stderr = check(edge(url));
        let want = format!("{shown}:10:7: uplink.url: WARNING: unencrypted hub link (ws://)");
        assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    }
    for url in ["ws://127.0.0.1:8080/ws", "ws://[::1]:8080/ws", "wss://hub.example.net/ws"] {
        let stderr = check(edge(url));
        assert!(!stderr.contains("WARNING"), "{url} is quiet:\n{stderr}");
    }
}

/// Issue 15, secure by default: a Janus fleet box (edge or floor host: floor over MQTT) without
/// `fleet_key_file` is a config error at the `[mqtt]` table's `file:line:column`, naming the fix,
/// for `roipd check` and `roipd run` alike; with `insecure_unsigned = true` it is valid with a
/// loud warning at that key; a key and the opt-out together are an error.
#[test]
fn a_fleet_without_a_key_is_an_error_unless_the_lab_opt_out_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("edge.toml");
    let shown = file.display().to_string();
    let key = dir.path().join("fleet.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let text = |floor_hub: &str, mqtt: &str| {
        format!(
            "device_id = \"edge-a\"\n[channel.ops]\n[channel.ops.janus]\nroom = 48213\n\
             [port.r1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:cor1\" }}\nptt = {{ line = \"sim:ptt1\" }}\n\
             [uplink]\nkind = \"janus\"\nurl = \"ws://127.0.0.2:8188\"\n{floor_hub}\
             [mqtt]\nurl = \"mqtts://127.0.0.1:1\"\n{mqtt}"
        )
    };
    let run = |cmd: &str, text: String| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_roipd"))
            .arg(cmd)
            .arg(&file)
            .env("RUNTIME_DIRECTORY", dir.path())
            .output()
            .expect("run roipd");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    // An edge (line 14 is `[mqtt]`) and a floor host (line 13): both refused, check and run alike.
    for (floor_hub, line) in [("floor_hub = \"hub-1\"\n", 14), ("", 13)] {
        for cmd in ["check", "run"] {
            let (code, stderr) = run(cmd, text(floor_hub, ""));
            assert_eq!(code, Some(2), "{cmd}: {stderr}");
            let want = format!("{shown}:{line}:1: mqtt: a Janus fleet (floor over MQTT) needs `fleet_key_file`");
            assert!(stderr.contains(&want), "{cmd}: missing {want:?} in:\n{stderr}");
            assert!(stderr.contains("openssl rand -hex 32") && stderr.contains("chmod 600"), "{stderr}");
            assert!(stderr.contains("insecure_unsigned = true"), "{stderr}");
        }
    }
    // The lab opt-out: valid, with a loud warning at its key.
    let (code, stderr) = run("check", text("floor_hub = \"hub-1\"\n", "insecure_unsigned = true\n"));
    assert_eq!(code, Some(0), "{stderr}");
    let want = format!("{shown}:16:21: mqtt.insecure_unsigned: WARNING: INSECURE (labs only)");
    assert!(stderr.contains(&want), "missing {want:?} in:\n{stderr}");
    assert!(stderr.contains("take the floor"), "{stderr}");
    // A key: no error about it (only the missing credentials and PIN warnings remain).
    let keyed = format!("fleet_key_file = \"{}\"\n", key.display());
    let (code, stderr) = run("check", text("floor_hub = \"hub-1\"\n", &keyed));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("fleet_key_file") && !stderr.contains("insecure_unsigned"), "{stderr}");
    // Both: contradictory, an error at the opt-out.
    let (code, stderr) = run("check", text("floor_hub = \"hub-1\"\n", &format!("{keyed}insecure_unsigned = true\n")));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{shown}:17:21: mqtt.insecure_unsigned: is set together with")), "{stderr}");
}

/// Issue 15, items 3 and 6: on a Janus fleet, `roipd check` warns (config still valid) at the
/// room's `file:line` on room 1234 (Debian's stock VideoRoom demo room: secret `adminpwd`, no
/// PIN), on a room without a PIN, and on a floor host without the room's secret; a room of its
/// own with a PIN (and on the floor host the secret) is quiet.
#[test]
fn check_warns_on_the_stock_demo_room_and_on_rooms_without_pin_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("box.toml");
    let key = dir.path().join("fleet.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pw = secret(dir.path(), "pw", b"s3cret\n");
    let pin = secret(dir.path(), "pin", b"4711\n");
    let room_secret = secret(dir.path(), "room", b"room-secret\n");
    let check = |room: u64, janus: &str, floor_hub: bool| {
        let text = format!(
            "device_id = \"edge-a\"\n[channel.ops]\n[channel.ops.janus]\nroom = {room}\n{janus}\
             [port.r1]\nkind = \"radio\"\nchannel = \"ops\"\ncor = {{ line = \"sim:cor1\" }}\nptt = {{ line = \"sim:ptt1\" }}\n\
             [uplink]\nkind = \"janus\"\nurl = \"ws://127.0.0.2:8188\"\n{}\
             [mqtt]\nurl = \"mqtts://127.0.0.1:1\"\nusername = \"edge-a\"\npassword_file = \"{pw}\"\nfleet_key_file = \"{}\"\n",
            if floor_hub { "floor_hub = \"hub-1\"\n" } else { "" },
            key.display()
        );
        std::fs::write(&file, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_roipd")).arg("check").arg(&file).output().expect("run roipd");
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        stderr
            .lines()
            .filter(|l| l.contains(": WARNING: ") && !l.contains("security warning"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let shown = file.display().to_string();
    let with_pin = format!("pin_file = \"{pin}\"\n");
    let warnings = check(1234, &with_pin, true);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(&format!(
            "{shown}:4:8: channel.ops.janus.room: WARNING: room 1234 is Debian's stock VideoRoom demo room"
        )),
        "{warnings:#?}"
    );
    let warnings = check(48213, "", true);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].starts_with(&format!("{shown}:3:1: channel.ops.janus: WARNING: no pin_file")), "{warnings:#?}");
    assert_eq!(check(48213, &with_pin, true), Vec::<String>::new(), "an edge needs no secret");
    let warnings = check(48213, &with_pin, false);
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("channel.ops.janus: WARNING: no secret_file on the floor host"), "{warnings:#?}");
    let host = format!("{with_pin}secret_file = \"{room_secret}\"\n");
    assert_eq!(check(48213, &host, false), Vec::<String>::new(), "the floor host with PIN and secret");
}

/// A self-signed certificate and its key made by openssl in `dir` (`<name>.crt`, `<name>.key`).
fn openssl_cert(dir: &Path, name: &str) -> (String, String) {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30"])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (Debian package openssl) makes the test certificates");
    assert!(ok.status.success(), "openssl: {}", String::from_utf8_lossy(&ok.stderr));
    (crt.display().to_string(), key.display().to_string())
}

fn tls_hub(dir: &Path, tls: &str) -> String {
    let token = secret(dir, "token", b"console-token\n");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!(
        "{BASE}[hub]\nlisten = \"127.0.0.1:{port}\"\n{tls}\ntoken.t1 = {{ secret_file = \"{token}\", channels = [\"*\"] }}\n"
    )
}

/// Certificate files are read by check as by run: a missing file, a file without PEM, a key
/// that is not the certificate's are errors at their key's line; a good pair passes both.
#[test]
fn hub_tls_files_are_judged_as_the_hub_judges_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (crt, key) = openssl_cert(d, "a");
    let (_, other_key) = openssl_cert(d, "b");
    let junk = secret(d, "junk.pem", b"not a certificate\n");
    let missing = d.join("missing.crt").display().to_string();
    let files = |c: &str, k: &str| format!("tls_cert_file = \"{c}\"\ntls_key_file = \"{k}\"");
    case_in(d, "good cert and key", tls_hub(d, &files(&crt, &key)).as_bytes(), &[]);
    case_in(d, "missing cert", tls_hub(d, &files(&missing, &key)).as_bytes(), &["10:hub.tls_cert_file"]);
    case_in(d, "junk cert", tls_hub(d, &files(&junk, &key)).as_bytes(), &["10:hub.tls_cert_file"]);
    case_in(d, "junk key", tls_hub(d, &files(&crt, &junk)).as_bytes(), &["11:hub.tls_key_file"]);
    case_in(d, "key of another cert", tls_hub(d, &files(&crt, &other_key)).as_bytes(), &["10:hub.tls_cert_file"]);
    let err = std::fs::read_to_string(d.join("check.err")).unwrap();
    assert!(err.contains("does not match this certificate") && err.contains("b.key"), "{err}");
    case_in(
        d,
        "cert without key",
        tls_hub(d, &format!("tls_cert_file = \"{crt}\"")).as_bytes(),
        &["10:hub.tls_cert_file"],
    );
    case_in(
        d,
        "tls = false with a cert",
        tls_hub(d, &format!("tls = false\n{}", files(&crt, &key))).as_bytes(),
        &["10:hub.tls"],
    );
    case_in(
        d,
        "redirect without TLS",
        tls_hub(d, "redirect_listen = \"127.0.0.1:1\"").as_bytes(),
        &["10:hub.redirect_listen"],
    );
}

/// Issue 16, reachability keys: check and run agree on good and bad `public_addresses`,
/// `ice_tcp_listen` and `ice_servers`.
#[test]
fn hub_reachability_keys_are_judged_as_the_hub_judges_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let turn = secret(d, "turn.secret", b"shared\n");
    let good = format!(
        "public_addresses = [\"203.0.113.7\", \"203.0.113.8:40000\"]\nice_tcp_listen = \"127.0.0.1:0\"\n\
         ice_servers = [{{ urls = [\"stun:198.18.0.1:3478\", \"turn:198.18.0.1:3478?transport=udp\"], secret_file = \"{turn}\" }}]"
    );
    case_in(d, "good reachability keys", tls_hub(d, &good).as_bytes(), &[]);
    case_in(
        d,
        "bad public address",
        tls_hub(d, "public_addresses = [\"203.0.113.7\", \"nope\"]").as_bytes(),
        &["10:hub.public_addresses"],
    );
    case_in(
        d,
        "unspecified public address",
        tls_hub(d, "public_addresses = [\"0.0.0.0\"]").as_bytes(),
        &["10:hub.public_addresses"],
    );
    case_in(d, "bad ICE-TCP address", tls_hub(d, "ice_tcp_listen = \"8444\"").as_bytes(), &["10:hub.ice_tcp_listen"]);
    case_in(
        d,
        "TURN without its secret",
        tls_hub(d, "ice_servers = [{ urls = [\"turn:198.18.0.1:3478\"] }]").as_bytes(),
        &["10:hub.ice_servers[0].secret_file"],
    );
    case_in(
        d,
        "not a STUN/TURN URL",
        tls_hub(d, "ice_servers = [{ urls = [\"http://x\"] }]").as_bytes(),
        &["10:hub.ice_servers[0].urls"],
    );
    let missing = d.join("missing.secret").display().to_string();
    case_in(
        d,
        "missing TURN secret file",
        tls_hub(d, &format!("ice_servers = [{{ urls = [\"turn:198.18.0.1:3478\"], secret_file = \"{missing}\" }}]"))
            .as_bytes(),
        &["10:hub.ice_servers[0].secret_file"],
    );
}

/// `tls = true` alone: check says the certificate is made on the first start; run makes it in
/// `state_dir` (key 0600); check then prints the fingerprint the hub logged.
#[test]
fn a_self_signed_hub_certificate_is_made_by_run_and_shown_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = tls_hub(d, &format!("tls = true\nstate_dir = \"{}/state\"", d.display()));
    let (errors, check) = same_verdict(d, text.as_bytes());
    assert!(errors.is_empty());
    assert!(check.stdout.contains("made on the first start"), "{}", check.stdout);
    let run = std::fs::read_to_string(d.join("run.err")).unwrap();
    let logged = run
        .split("fingerprint=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in the log:\n{run}"));
    let check = roipd_in(d, &["check", "box.toml"], std::time::Duration::from_secs(20));
    assert_eq!(check.code, Some(0), "{}", check.stderr);
    assert!(check.stdout.contains(&format!("SHA-256 fingerprint: {logged}")), "{}", check.stdout);
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(d.join("state/hub-cert.pem"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&openssl.stdout).contains(logged), "openssl agrees on the fingerprint");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.join("state/hub-key.pem")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn uplink_tls_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let token = secret(d, "token", b"edge\n");
    let uplink = |url: &str, extra: &str| {
        format!("{BASE}[uplink]\nkind = \"hub\"\nurl = \"{url}\"\ntoken_file = \"{token}\"\n{extra}\n")
    };
    let fp = "AB:".repeat(31) + "AB";
    case_in(d, "pinned wss", uplink("wss://127.0.0.1:1", &format!("fingerprint = \"{fp}\"")).as_bytes(), &[]);
    case_in(
        d,
        "short pin",
        uplink("wss://127.0.0.1:1", "fingerprint = \"AB:CD\"").as_bytes(),
        &["12:uplink.fingerprint"],
    );
    case_in(
        d,
        "pin on ws://",
        uplink("ws://127.0.0.1:1", &format!("fingerprint = \"{fp}\"")).as_bytes(),
        &["12:uplink.fingerprint"],
    );
    let missing = d.join("nope.pem").display().to_string();
    case_in(
        d,
        "missing ca_file",
        uplink("https://127.0.0.1:1", &format!("ca_file = \"{missing}\"")).as_bytes(),
        &["12:uplink.ca_file"],
    );
}

/// A state directory the daemon could not write is said by check, at `hub.state_dir`.
#[test]
fn an_unwritable_state_dir_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = secret(d, "file", b"a file, not a directory\n");
    let text = tls_hub(d, &format!("tls = true\nstate_dir = \"{file}/state\""));
    case_in(d, "state_dir under a file", text.as_bytes(), &["11:hub.state_dir"]);
}

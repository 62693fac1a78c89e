//! Deployment files: the systemd unit (`systemd-analyze verify`, and the sandbox's
//! `systemd-analyze security` exposure printed), the sysusers and tmpfiles files (applied to a
//! throwaway root), the Yocto layer (every Cargo.lock crate pinned with its checksum, the
//! recipe's files exist, its version is the crate's), the board asound.conf files (parsed by
//! alsa-lib), the udev rules (syntax), and the packaged default config (`roipd check`).
//!
//! A tool that is missing fails its test with the Debian package to install (never a silent
//! skip); `scripts/setup-debian --test` installs them. Heavy deployment checks are scripts,
//! not tests: `scripts/cross-build` (aarch64 build, unit tests under qemu) and
//! `scripts/package-deb` (build, install, start, purge the .deb).
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A command from PATH, or a failure naming the Debian package that provides it.
fn tool(name: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{name}` is not installed: install the Debian package `{package}` \
         (scripts/setup-debian --test installs everything these tests use)"
    );
    Command::new(name)
}

fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    eprintln!("$ {shown}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    out
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The unit as installed, but with ExecStart/ExecStopPost pointing at the binary cargo built:
/// `systemd-analyze verify` insists that every Exec path exists and is executable, and
/// /usr/bin/roipd only exists where the package is installed. Nothing else is changed.
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let unit = read("systemd/roipd.service");
    assert!(unit.contains("ExecStart=/usr/bin/roipd run /etc/roipd/roipd.toml"), "ExecStart changed?");
    let path = dir.join("roipd.service");
    fs::write(&path, unit.replace("/usr/bin/roipd", env!("CARGO_BIN_EXE_roipd"))).unwrap();
    path
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_built_binary(dir.path());
    let mut cmd = tool("systemd-analyze", "systemd");
    cmd.args(["verify", "--man=no"]).arg(&unit);
    let out = run(cmd);
    assert!(out.status.success(), "systemd-analyze verify failed:\n{}", text(&out));
    // Warnings (unknown keys, bad values) exit 0 too: the output must be empty.
    assert!(text(&out).trim().is_empty(), "systemd-analyze verify complained:\n{}", text(&out));

    // The file as shipped differs only in that /usr/bin/roipd is not installed here.
    let mut cmd = tool("systemd-analyze", "systemd");
    cmd.args(["verify", "--man=no"]).arg(root().join("systemd/roipd.service"));
    let out = run(cmd);
    let other: Vec<String> = text(&out)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("/usr/bin/roipd is not executable"))
        .map(String::from)
        .collect();
    assert!(other.is_empty(), "the shipped unit has other problems: {other:#?}");
}

#[test]
fn systemd_unit_security_exposure_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_built_binary(dir.path());
    let mut cmd = tool("systemd-analyze", "systemd");
    cmd.args(["security", "--offline=yes", "--no-pager"]).arg(&unit);
    let out = cmd.output().expect("systemd-analyze security");
    let report = text(&out);
    let overall = report.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| {
        panic!("systemd-analyze security printed no overall exposure level:\n{report}");
    });
    // Printed for the record (cargo test -- --nocapture shows it); not a pass/fail threshold.
    println!("{report}");
    println!("systemd-analyze security: {}", overall.trim_start_matches(['→', ' ']));
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with('✗')).collect();
    println!("{} settings not hardened (each explained in systemd/roipd.service)", failed.len());
}

/// The unit's promises that the rest of the deployment relies on.
#[test]
fn systemd_unit_keeps_its_safety_settings() {
    let unit = read("systemd/roipd.service");
    let settings: Vec<&str> = unit.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStopPost=/usr/bin/roipd safe-off /etc/roipd/roipd.toml",
        "Restart=always",
        "StartLimitIntervalSec=0",
        "WatchdogSec=10",
        "User=roipd",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "DevicePolicy=closed",
        "DeviceAllow=char-alsa rw",
        "DeviceAllow=char-gpiochip rw",
        "DeviceAllow=char-hidraw rw",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-ttyACM rw",
        "StateDirectory=roipd",
        "RuntimeDirectory=roipd",
    ] {
        assert!(settings.contains(&want), "systemd/roipd.service lost `{want}`");
    }
    let families = settings.iter().find_map(|l| l.strip_prefix("RestrictAddressFamilies=")).unwrap();
    assert_eq!(families, "AF_UNIX AF_INET AF_INET6 AF_NETLINK");
}

/// Apply roipd.sysusers and then roipd.tmpfile to an empty throwaway root.
#[test]
fn sysusers_and_tmpfiles_apply_to_a_fresh_root() {
    let dir = tempfile::tempdir().unwrap();
    let sysroot = dir.path();
    fs::create_dir(sysroot.join("etc")).unwrap();
    let mut cmd = tool("systemd-sysusers", "systemd");
    cmd.arg(format!("--root={}", sysroot.display())).arg(root().join("systemd/roipd.sysusers"));
    let out = run(cmd);
    assert!(out.status.success(), "systemd-sysusers failed:\n{}", text(&out));

    let passwd = fs::read_to_string(sysroot.join("etc/passwd")).unwrap();
    let user = passwd.lines().find(|l| l.starts_with("roipd:")).unwrap_or_else(|| panic!("no roipd in:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert!(fields[2].parse::<u32>().unwrap() < 1000, "roipd must be a system user: {user}");
    assert_eq!(fields[5], "/var/lib/roipd", "{user}");
    assert!(fields[6].ends_with("nologin"), "roipd must not have a login shell: {user}");

    let group = fs::read_to_string(sysroot.join("etc/group")).unwrap();
    let members: BTreeMap<&str, Vec<&str>> = group
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0], f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default())
        })
        .collect();
    assert!(members.contains_key("roipd"), "no group roipd:\n{group}");
    for g in ["audio", "gpio", "dialout", "plugdev"] {
        let m = members.get(g).unwrap_or_else(|| panic!("group {g} not created:\n{group}"));
        assert!(m.contains(&"roipd"), "roipd is not a member of {g}:\n{group}");
    }

    // tmpfiles: /etc/roipd becomes root:roipd 0750 (secrets in it can then be root:roipd 0640).
    let mut cmd = tool("systemd-tmpfiles", "systemd");
    cmd.arg(format!("--root={}", sysroot.display())).arg("--create").arg(root().join("systemd/roipd.tmpfile"));
    let out = run(cmd);
    assert!(out.status.success(), "systemd-tmpfiles failed:\n{}", text(&out));
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::metadata(sysroot.join("etc/roipd")).expect("/etc/roipd not created");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    let gid: u32 = group.lines().find(|l| l.starts_with("roipd:")).unwrap().split(':').nth(2).unwrap().parse().unwrap();
    if nix_is_root() {
        assert_eq!((meta.uid(), meta.gid()), (0, gid), "/etc/roipd must be root:roipd");
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// crate name and version -> checksum, for every crates.io package in Cargo.lock.
fn locked_crates() -> BTreeMap<(String, String), String> {
    let lock: toml::Table = toml::from_str(&read("Cargo.lock")).expect("Cargo.lock parses");
    let mut crates = BTreeMap::new();
    for pkg in lock["package"].as_array().unwrap() {
        let source = pkg.get("source").and_then(|s| s.as_str());
        let Some(source) = source else { continue }; // roipd itself
        let name = pkg["name"].as_str().unwrap().to_string();
        let version = pkg["version"].as_str().unwrap().to_string();
        assert_eq!(
            source, "registry+https://github.com/rust-lang/crates.io-index",
            "{name} {version} is not from crates.io: the Yocto recipe can only pin crates.io crates"
        );
        let checksum = pkg.get("checksum").and_then(|c| c.as_str()).unwrap_or_else(|| panic!("{name} has no checksum"));
        crates.insert((name, version), checksum.to_string());
    }
    assert!(crates.len() > 50, "suspiciously few crates in Cargo.lock");
    crates
}

/// (URIs as (name, version), checksums by `name-version`) from a crates.inc text.
fn parse_crates_inc(inc: &str) -> (BTreeSet<(String, String)>, BTreeMap<String, String>) {
    let mut uris = BTreeSet::new();
    let mut sums = BTreeMap::new();
    for line in inc.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("crate://crates.io/") {
            let rest = rest.trim_end_matches('\\').trim();
            let (path, params) = rest.split_once(';').unwrap_or((rest, ""));
            let (name, version) = path.split_once('/').unwrap_or_else(|| panic!("bad crate URI: {line}"));
            assert_eq!(params, format!("name={name}-{version}"), "crate URI without its checksum name: {line}");
            uris.insert((name.to_string(), version.to_string()));
        } else if let Some(rest) = line.strip_prefix("SRC_URI[") {
            let (key, value) = rest.split_once("] = ").unwrap_or_else(|| panic!("bad checksum line: {line}"));
            let key = key.strip_suffix(".sha256sum").unwrap_or_else(|| panic!("not a sha256sum: {line}"));
            sums.insert(key.to_string(), value.trim_matches('"').to_string());
        }
    }
    (uris, sums)
}

/// Every crate is in SRC_URI with the checksum Cargo.lock has. Extra (stale) entries only warn.
fn assert_pins_every_crate(inc: &str, what: &str) {
    let locked = locked_crates();
    let (uris, sums) = parse_crates_inc(inc);
    let mut missing = Vec::new();
    for ((name, version), checksum) in &locked {
        let key = format!("{name}-{version}");
        if !uris.contains(&(name.clone(), version.clone())) {
            missing.push(format!("{key}: not in SRC_URI"));
        }
        match sums.get(&key) {
            None => missing.push(format!("{key}: no SRC_URI[{key}.sha256sum]")),
            Some(sum) if sum != checksum => missing.push(format!("{key}: sha256 {sum}, Cargo.lock says {checksum}")),
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "{what} does not pin Cargo.lock ({} problems, first ones below). After every Cargo.lock \
         change run `yocto/meta-roipd/scripts/gen-crates-inc` and commit {CRATES_INC} with it:\n{}",
        missing.len(),
        missing.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
    );
    let stale: Vec<_> = uris.iter().filter(|k| !locked.contains_key(*k)).collect();
    if !stale.is_empty() {
        eprintln!("warning: {what} has {} crates Cargo.lock no longer uses: {stale:?}", stale.len());
    }
}

const CRATES_INC: &str = "yocto/meta-roipd/recipes-roipd/roipd/roipd-crates.inc";

#[test]
fn yocto_crates_inc_pins_every_locked_crate_with_its_checksum() {
    assert_pins_every_crate(&read(CRATES_INC), CRATES_INC);
}

#[test]
fn yocto_gen_crates_inc_script_generates_a_complete_inc() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("roipd-crates.inc");
    // Debian's python3 (3.11 on Debian 12) has tomllib; a python3 earlier in PATH may not.
    let mut cmd = if Path::new("/usr/bin/python3").is_file() {
        Command::new("/usr/bin/python3")
    } else {
        tool("python3", "python3")
    };
    cmd.arg(root().join("yocto/meta-roipd/scripts/gen-crates-inc"))
        .arg("--lock")
        .arg(root().join("Cargo.lock"))
        .arg("--out")
        .arg(&out_path);
    let out = run(cmd);
    assert!(out.status.success(), "gen-crates-inc failed (needs Python >= 3.11 for tomllib):\n{}", text(&out));
    let generated = fs::read_to_string(&out_path).unwrap();
    assert_pins_every_crate(&generated, "the generated crates.inc");
    let committed = read(CRATES_INC);
    if generated != committed {
        let (new, old): (BTreeSet<&str>, BTreeSet<&str>) = (generated.lines().collect(), committed.lines().collect());
        let added: Vec<&&str> = new.difference(&old).take(6).collect();
        let removed: Vec<&&str> = old.difference(&new).take(6).collect();
        panic!(
            "{CRATES_INC} is not what gen-crates-inc makes from Cargo.lock now: run \
             `yocto/meta-roipd/scripts/gen-crates-inc` and commit it with Cargo.lock.\n\
             first lines it would add: {added:#?}\nfirst lines it would remove: {removed:#?}"
        );
    }
}

/// What can be checked without bitbake: names, paths and values the recipe relies on.
#[test]
fn yocto_recipe_matches_the_crate_and_references_existing_files() {
    let dir = "yocto/meta-roipd/recipes-roipd/roipd";
    let version = env!("CARGO_PKG_VERSION");
    let recipe_name = format!("{dir}/roipd_{version}.bb");
    assert!(root().join(&recipe_name).is_file(), "the recipe must be named after the crate version: {recipe_name}");
    let recipe = read(&recipe_name);

    // layer.conf's BBFILES pattern picks the recipe up.
    let layer = read("yocto/meta-roipd/conf/layer.conf");
    assert!(layer.contains("${LAYERDIR}/recipes-*/*/*.bb"), "layer.conf BBFILES does not match {recipe_name}");
    assert!(layer.contains("LAYERSERIES_COMPAT_roipd"));

    for want in [
        "require ${BPN}-crates.inc",
        "inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd",
        "DEPENDS += \"alsa-lib libopus\"",
        "SYSTEMD_SERVICE:${PN} = \"roipd.service\"",
        "USERADD_PACKAGES = \"${PN}\"",
        "CONFFILES:${PN} = \"${sysconfdir}/roipd/roipd.toml\"",
        "LICENSE = \"Apache-2.0\"",
    ] {
        assert!(recipe.contains(want), "{recipe_name} lacks `{want}`");
    }
    let license: toml::Table = toml::from_str(&read("Cargo.toml")).unwrap();
    assert_eq!(
        license["package"]["license"].as_str(),
        Some("Apache-2.0"),
        "LICENSE in the recipe must follow Cargo.toml"
    );

    // Every ${S}/path the recipe installs exists in this repository (S is the repo root).
    let mut referenced = 0;
    for piece in recipe.split("${S}/").skip(1) {
        let path: String = piece.chars().take_while(|c| !c.is_whitespace() && *c != '"' && *c != '}').collect();
        let path = path.trim_end_matches('.').trim_end_matches('/');
        assert!(root().join(path).exists(), "{recipe_name} installs ${{S}}/{path}, which does not exist");
        referenced += 1;
    }
    assert!(referenced >= 6, "expected the recipe to install unit, sysusers, tmpfile, udev rules, config, docs");

    // The user and groups agree with the sysusers file.
    let sysusers = read("systemd/roipd.sysusers");
    for g in ["audio", "gpio", "dialout", "plugdev"] {
        assert!(sysusers.contains(&format!("m roipd {g}")), "sysusers lacks group {g}");
        assert!(recipe.contains(g), "recipe's USERADD_PARAM lacks group {g}");
    }
    // The unit's binary path is where the cargo class installs (bindir = /usr/bin).
    assert!(read("systemd/roipd.service").contains("ExecStart=/usr/bin/roipd "));
    assert!(root().join("yocto/meta-roipd/README.md").is_file());
}

/// Every asound.conf in board/ parses in alsa-lib and defines the PCMs it promises.
#[test]
fn board_asound_confs_parse_and_define_their_pcms() {
    let mut checked = 0;
    for entry in fs::read_dir(root().join("board")).unwrap() {
        let conf = entry.unwrap().path().join("asound.conf");
        if !conf.is_file() {
            continue;
        }
        let body = fs::read_to_string(&conf).unwrap();
        let pcms: Vec<&str> =
            body.lines().filter_map(|l| l.trim().strip_prefix("pcm.")?.split_whitespace().next()).collect();
        assert!(!pcms.is_empty(), "{} defines no pcm", conf.display());
        let mut cmd = tool("aplay", "alsa-utils");
        cmd.arg("-L").env("ALSA_CONFIG_PATH", format!("/usr/share/alsa/alsa.conf:{}", conf.display()));
        let out = run(cmd);
        let all = text(&out);
        assert!(out.status.success() && !all.contains("ALSA lib"), "{} does not parse:\n{all}", conf.display());
        let listed = String::from_utf8_lossy(&out.stdout);
        for pcm in pcms {
            assert!(
                listed.lines().any(|l| l == pcm),
                "{}: pcm.{pcm} is not listed by aplay -L:\n{listed}",
                conf.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 4, "expected asound.conf in rpi4, cm4-io, aioc and cm108");
}

/// udev rules: every rule line is comma-separated `KEY[{attr}]OP"value"` with known keys.
#[test]
fn udev_rules_are_well_formed() {
    let mut files = vec![root().join("packaging/60-roipd.rules")];
    for entry in fs::read_dir(root().join("board")).unwrap() {
        let dir = entry.unwrap().path();
        if dir.is_dir() {
            for f in fs::read_dir(&dir).unwrap() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|x| x == "rules") {
                    files.push(f);
                }
            }
        }
    }
    assert!(files.len() >= 5, "expected packaging/60-roipd.rules and the board rules: {files:?}");
    const KEYS: &[&str] = &[
        "ACTION",
        "SUBSYSTEM",
        "SUBSYSTEMS",
        "KERNEL",
        "KERNELS",
        "DRIVERS",
        "ATTR",
        "ATTRS",
        "ENV",
        "TAG",
        "GROUP",
        "OWNER",
        "MODE",
        "SYMLINK",
        "NAME",
        "IMPORT",
        "RUN",
        "PROGRAM",
        "LABEL",
        "GOTO",
        "TEST",
    ];
    for file in files {
        let body = fs::read_to_string(&file).unwrap();
        for (n, line) in body.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut matches = 0;
            for token in split_outside_quotes(line) {
                let token = token.trim();
                let key_end = token.find(|c: char| !c.is_ascii_uppercase() && c != '_').unwrap_or(token.len());
                let key = &token[..key_end];
                let mut rest = &token[key_end..];
                assert!(KEYS.contains(&key), "{}:{}: unknown key `{key}` in `{token}`", file.display(), n + 1);
                if let Some(attr) = rest.strip_prefix('{') {
                    let close = attr
                        .find('}')
                        .unwrap_or_else(|| panic!("{}:{}: unclosed {{ in `{token}`", file.display(), n + 1));
                    rest = &attr[close + 1..];
                }
                let op = ["==", "!=", "+=", "-=", ":=", "="].into_iter().find(|op| rest.starts_with(op));
                let op = op.unwrap_or_else(|| panic!("{}:{}: no operator in `{token}`", file.display(), n + 1));
                let value = &rest[op.len()..];
                assert!(
                    value.len() >= 2 && value.starts_with('"') && value.ends_with('"'),
                    "{}:{}: value not quoted in `{token}`",
                    file.display(),
                    n + 1
                );
                if op == "==" || op == "!=" {
                    matches += 1;
                }
            }
            assert!(matches > 0, "{}:{}: a rule without a match applies to every device", file.display(), n + 1);
        }
    }
}

fn split_outside_quotes(line: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts
}

/// The config the Debian package and the Yocto recipe install must pass `roipd check`. (The
/// examples in board/ are checked by tests/config_check.rs.)
#[test]
fn packaged_default_config_passes_check() {
    let out = run({
        let mut c = Command::new(env!("CARGO_BIN_EXE_roipd"));
        c.arg("check").arg(root().join("packaging/roipd.toml"));
        c
    });
    assert!(out.status.success(), "packaging/roipd.toml fails roipd check:\n{}", text(&out));
    let body = read("packaging/roipd.toml");
    assert!(body.contains("dir = \"/run/roipd/lines\""), "the packaged demo must use the service's RuntimeDirectory");
    assert!(
        !body.contains("rppal:") && !body.contains("cdev:") && !body.contains("cm108:") && !body.contains("serial:"),
        "the packaged default config must key no real radio"
    );
}

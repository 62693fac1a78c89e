//! A real Mosquitto for one test: five listeners on 127.0.0.1 with free ports (anonymous,
//! password, TLS, TLS with client certificates, and TLS with both a client certificate and a
//! password), an openssl-made CA, and teardown on drop.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "gw-auth";
pub const PASSWORD: &str = "right-horse-battery-staple";
pub const WRONG_PASSWORD: &str = "wrong-password-never-logged";

/// Missing tools fail the test with the packages to install: never a silent skip.
pub fn require(tool: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path.split(':').map(PathBuf::from).chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{tool}` not found: the fleet MQTT tests need a real broker and its tools. Install the Debian \
         packages `mosquitto mosquitto-clients openssl` (scripts/setup-debian --test does it)"
    );
}

pub struct Broker {
    pub dir: tempfile::TempDir,
    pub anon: u16,
    pub auth: u16,
    pub tls: u16,
    pub mtls: u16,
    /// TLS, client certificate required, and username/password.
    pub mtls_auth: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    pub fn start() -> Broker {
        require("mosquitto");
        require("mosquitto_passwd");
        require("mosquitto_pub");
        require("openssl");
        let dir = tempfile::tempdir().unwrap();
        make_pki(dir.path());
        let passwd = dir.path().join("passwd");
        run(Command::new(require("mosquitto_passwd")).args(["-c", "-b"]).arg(&passwd).args([USER, PASSWORD]));
        std::fs::write(dir.path().join("pw-good"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("pw-bad"), format!("{WRONG_PASSWORD}\n")).unwrap();

        let [anon, auth, tls, mtls, mtls_auth] = free_ports();
        let d = dir.path().display();
        // Running as root, Mosquitto drops to user `mosquitto` and could not read our 0600 files.
        let user = if unsafe { libc::geteuid() } == 0 { "user root\n" } else { "" };
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{user}per_listener_settings true\npersistence false\nlog_dest stderr\n\
                 log_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
                 listener {anon} 127.0.0.1\nallow_anonymous true\n\
                 listener {auth} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n\
                 listener {tls} 127.0.0.1\nallow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
                 listener {mtls} 127.0.0.1\nallow_anonymous true\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
                 require_certificate true\n\
                 listener {mtls_auth} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwd\n\
                 cafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\n"
            ),
        )
        .unwrap();
        let mut broker = Broker { dir, anon, auth, tls, mtls, mtls_auth, conf, child: None };
        broker.spawn();
        broker
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("broker.log")).unwrap();
        let child = Command::new(require("mosquitto"))
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in [self.anon, self.auth, self.tls, self.mtls, self.mtls_auth] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("mosquitto exited ({status}) at start:\n{}", self.log());
                }
                assert!(Instant::now() < deadline, "mosquitto not listening on {port}:\n{}", self.log());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// One more listener that takes only the users of `passwd` (hashed) under `acl` (an
    /// `acl_file`), as a secure fleet's broker does; restarts the broker. Returns its port.
    #[allow(dead_code)] // tests/floor_mqtt.rs only; tests/fleet_mqtt.rs shares this module
    pub fn add_acl_listener(&mut self, passwd: &Path, acl: &Path) -> u16 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut conf = std::fs::read_to_string(&self.conf).unwrap();
        conf.push_str(&format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n",
            passwd.display(),
            acl.display()
        ));
        std::fs::write(&self.conf, conf).unwrap();
        self.restart();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto not listening on {port}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        port
    }

    /// Kill the broker (connections drop at once; nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same ports.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_ports() -> [u16; 5] {
    // Hold all at once so they differ; the broker binds them right after.
    let listeners: Vec<TcpListener> = (0..5).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [ports[0], ports[1], ports[2], ports[3], ports[4]]
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// A test CA, a second unrelated CA, a server cert for 127.0.0.1/localhost and a client cert.
fn make_pki(dir: &Path) {
    let openssl = require("openssl");
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for ca in ["ca", "wrong-ca"] {
        run(Command::new(&openssl)
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(ec)
            .args(["-keyout", &format!("{ca}.key"), "-out", &format!("{ca}.pem"), "-days", "2"])
            .args(["-subj", &format!("/CN=roipd test {ca}")])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]));
    }
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let mut f = std::fs::File::create(dir.join(format!("{name}.ext"))).unwrap();
        write!(f, "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n{ext}").unwrap();
        run(Command::new(&openssl).current_dir(dir).arg("req").args(ec).args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]));
        run(Command::new(&openssl).current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]));
    }
}

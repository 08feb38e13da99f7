//! Software nobody here wrote, for the tests to run: Python packages in a
//! virtualenv, npm packages, and nginx. Each is installed on first use, so
//! that `cargo test` on a fresh machine (Rust, `redis-server`, the OS's
//! package manager) brings what it needs:
//!
//! - [`python`]: `target/tmp/test-env/venv`, from `tests/frameworks/requirements.txt`,
//!   reinstalled whenever that file changes;
//! - [`node_modules`]: `target/tmp/test-env/node`, from `tests/frameworks/package.json`;
//! - [`nginx`]: the system's nginx, installed with `apt-get` when missing,
//!   and its brotli module where Debian ships it.
//!
//! Test binaries run in parallel: each install holds a file lock, and the
//! others wait for it and then find it done.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use super::{POLL_EVERY, WAIT, free_port};

/// The folder the tests install into.
pub fn test_env() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-env")
}

/// The folder of the framework apps and the lists of what they need.
pub fn frameworks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/frameworks")
}

/// Runs `install` once for `name` across every test process, unless the
/// stamp already says `version` was installed.
fn installed_once(name: &str, version: &str, install: impl FnOnce()) {
    let env = test_env();
    std::fs::create_dir_all(&env).expect("create target/tmp/test-env");
    let lock = File::create(env.join(format!("{name}.lock"))).expect("create the install lock");
    lock.lock().expect("take the install lock");
    let stamp = env.join(format!("{name}.installed"));
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(version) {
        eprintln!(
            "installing the tests' {name} into {} (first use)",
            env.display()
        );
        install();
        std::fs::write(&stamp, version).expect("write the install stamp");
    }
}

fn run(cmd: &mut Command, what: &str) -> bool {
    match cmd.stdin(Stdio::null()).status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("{what}: {e}");
            false
        }
    }
}

fn apt_install(packages: &[&str]) -> bool {
    static UPDATED: OnceLock<bool> = OnceLock::new();
    UPDATED.get_or_init(|| {
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update",
        )
    });
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

/// The virtualenv's python, with every package of `requirements.txt`.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = test_env().join("venv");
            let python = venv.join("bin/python");
            let requirements = frameworks_dir().join("requirements.txt");
            let wanted = std::fs::read_to_string(&requirements).expect("read requirements.txt");
            installed_once("venv", &wanted, || {
                let create = |venv: &Path| {
                    run(
                        Command::new("python3").arg("-m").arg("venv").arg(venv),
                        "python3 -m venv",
                    )
                };
                if !python.exists() && !create(&venv) {
                    // No python3, or Debian's, which keeps venv in a package
                    // of its own.
                    let _ = std::fs::remove_dir_all(&venv);
                    assert!(
                        apt_install(&["python3", "python3-venv"]) && create(&venv),
                        "cannot create a virtualenv: install python3 with its venv module"
                    );
                }
                let ok = run(
                    Command::new(&python)
                        .args([
                            "-m",
                            "pip",
                            "install",
                            "-q",
                            "--disable-pip-version-check",
                            "-r",
                        ])
                        .arg(&requirements),
                    "pip install",
                );
                assert!(
                    ok,
                    "pip install -r tests/frameworks/requirements.txt failed"
                );
            });
            python
        })
        .clone()
}

/// `node_modules` with every package of `package.json`.
pub fn node_modules() -> PathBuf {
    static MODULES: OnceLock<PathBuf> = OnceLock::new();
    MODULES
        .get_or_init(|| {
            let dir = test_env().join("node");
            let manifest = frameworks_dir().join("package.json");
            let wanted = std::fs::read_to_string(&manifest).expect("read package.json");
            installed_once("node", &wanted, || {
                if Command::new("npm").arg("--version").output().is_err() {
                    assert!(
                        apt_install(&["nodejs", "npm"]),
                        "cannot install node and npm"
                    );
                }
                std::fs::create_dir_all(&dir).expect("create the node folder");
                std::fs::write(dir.join("package.json"), &wanted).expect("copy package.json");
                let ok = run(
                    Command::new("npm")
                        .args(["install", "--no-audit", "--no-fund", "--silent"])
                        .current_dir(&dir),
                    "npm install",
                );
                assert!(ok, "npm install of tests/frameworks/package.json failed");
            });
            dir.join("node_modules")
        })
        .clone()
}

/// Where Debian's nginx keeps its dynamic modules.
const NGINX_MODULES: &str = "/usr/lib/nginx/modules";
const BROTLI_MODULE: &str = "ngx_http_brotli_filter_module.so";

/// The nginx binary, and the brotli filter module when Debian ships it.
pub fn nginx() -> (PathBuf, Option<PathBuf>) {
    static NGINX: OnceLock<(PathBuf, Option<PathBuf>)> = OnceLock::new();
    NGINX
        .get_or_init(|| {
            let binary = PathBuf::from("/usr/sbin/nginx");
            let module = Path::new(NGINX_MODULES).join(BROTLI_MODULE);
            installed_once("nginx", "nginx with brotli", || {
                if !binary.exists() {
                    assert!(apt_install(&["nginx"]), "cannot install nginx with apt-get");
                }
                if !module.exists() {
                    // Optional: the tests of br then run without it.
                    apt_install(&["libnginx-mod-http-brotli-filter"]);
                }
            });
            assert!(
                binary.exists(),
                "nginx is not installed at {}",
                binary.display()
            );
            (binary, module.exists().then_some(module))
        })
        .clone()
}

/// A backend process: killed on drop, its output kept in a file printed
/// when it fails to start.
pub struct Process {
    pub port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(mut cmd: Command, port: u16, dir: tempfile::TempDir) -> Process {
        let log = dir.path().join("backend.log");
        let out = File::create(&log).expect("create the backend log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        Process {
            port,
            child,
            log,
            _dir: dir,
        }
    }

    /// Polls `GET /calls` until the backend answers.
    async fn ready(mut self) -> Process {
        let deadline = tokio::time::Instant::now() + WAIT * 3;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("the backend exited ({status}) before it was ready:\n{log}");
            }
            let addr = ([127, 0, 0, 1], self.port).into();
            if let Ok(resp) = super::Req::new(addr, "GET", "/calls").try_send().await
                && resp.status == 200
            {
                return self;
            }
            if tokio::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("the backend did not answer /calls:\n{log}");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// How often each normalized query reached the backend.
    pub async fn calls(&self, query: &str) -> u64 {
        let addr = ([127, 0, 0, 1], self.port).into();
        let resp = super::Req::new(addr, "GET", "/calls").send().await;
        resp.json()[query].as_u64().unwrap_or(0)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The FastAPI app under uvicorn; `gzip` adds FastAPI's GZipMiddleware.
pub async fn fastapi(gzip: bool) -> Process {
    let python = tokio::task::spawn_blocking(python)
        .await
        .expect("install python");
    let port = free_port();
    let mut cmd = Command::new(python);
    cmd.args(["-m", "uvicorn", "search_app:app", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--log-level", "warning"])
        .arg("--app-dir")
        .arg(frameworks_dir())
        .env("GZIP", if gzip { "1" } else { "0" });
    let dir = tempfile::tempdir().expect("create a temp dir");
    Process::spawn(cmd, port, dir).ready().await
}

/// The Express app with the `compression` middleware.
pub async fn express() -> Process {
    let modules = tokio::task::spawn_blocking(node_modules)
        .await
        .expect("install npm packages");
    let port = free_port();
    let mut cmd = Command::new("node");
    cmd.arg(frameworks_dir().join("search_app.js"))
        .arg(port.to_string())
        .env("NODE_PATH", modules);
    let dir = tempfile::tempdir().expect("create a temp dir");
    Process::spawn(cmd, port, dir).ready().await
}

/// nginx with `gzip on` (and `brotli on` where the module is installed) as
/// a reverse proxy in front of `app`, which answers plain: the way many
/// deployments compress. Returns nginx and whether it speaks br.
pub async fn nginx_in_front_of(app: &Process) -> (Process, bool) {
    let (binary, brotli) = tokio::task::spawn_blocking(nginx)
        .await
        .expect("install nginx");
    let port = free_port();
    let dir = tempfile::tempdir().expect("create a temp dir");
    let prefix = dir.path();
    let load = brotli
        .as_ref()
        .map(|m| format!("load_module {};", m.display()))
        .unwrap_or_default();
    let brotli_on = if brotli.is_some() {
        "brotli on; brotli_min_length 20; brotli_types application/json;"
    } else {
        ""
    };
    let user = if is_root() { "user root;" } else { "" };
    let conf = format!(
        "{load}\n{user}\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         daemon off;\nevents {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
         fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
         gzip on; gzip_proxied any; gzip_min_length 20; gzip_types application/json;\n  {brotli_on}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{ proxy_pass http://127.0.0.1:{app}; }}\n  }}\n}}\n",
        p = prefix.display(),
        app = app.port,
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("write nginx.conf");
    let mut cmd = Command::new(binary);
    cmd.arg("-p").arg(prefix).arg("-c").arg(&conf_path);
    let has_brotli = brotli.is_some();
    (Process::spawn(cmd, port, dir).ready().await, has_brotli)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
}

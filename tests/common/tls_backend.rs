//! A TLS backend nobody here wrote: nginx serving a fixed JSON search answer
//! over https, with a certificate from a CA the test makes ([`TestCa`]).
//!
//! nginx runs in the foreground as one process (`master_process off`), so
//! dropping [`TlsNginx`] kills all of it. Every request it answers is a line
//! of its access log ([`TlsNginx::requests`]): the protocol it was spoken
//! in, the method and path, `Host` and `X-Forwarded-Proto`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::{eventually, free_port};

/// A CA made for one test, and server certificates it signs.
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate and its key (PEM).
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("self-sign the CA").pem();
        TestCa {
            pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn server_cert(&self, names: &[&str]) -> ServerCert {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("server params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let cert_pem = params.signed_by(&key, &self.issuer).expect("sign").pem();
        ServerCert {
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

/// The answer nginx gives every request; `$server_protocol` tells which
/// protocol leafcache spoke, `$request_id` which request made the answer.
const ANSWER: &str = r#"{"intent": "product_search", "confidence": 0.9, "products": [{"product_id": "p1", "supplier": "s1"}], "protocol": "$server_protocol", "request_id": "$request_id"}"#;

pub struct TlsNginx {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl TlsNginx {
    /// nginx on 127.0.0.1 serving https with `cert`; ALPN offers h2 (and
    /// http/1.1) when `http2`, else http/1.1 only.
    pub async fn start(cert: &ServerCert, http2: bool) -> TlsNginx {
        let nginx = nginx_binary();
        let dir = tempfile::tempdir().expect("a temp dir for nginx");
        let file = |name: &str| dir.path().join(name);
        std::fs::write(file("server.pem"), &cert.cert_pem).expect("write the certificate");
        std::fs::write(file("server.key"), &cert.key_pem).expect("write the key");
        std::fs::create_dir(file("tmp")).expect("nginx's temp dir");
        let port = free_port();
        std::fs::write(file("nginx.conf"), config(dir.path(), port, http2)).expect("nginx.conf");
        let log = std::fs::File::create(file("nginx.out")).expect("nginx.out");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(file("nginx.conf"))
            .arg("-e")
            .arg(file("error.log"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone a log handle"))
            .stderr(log)
            .spawn()
            .expect("start nginx");
        let mut nginx = TlsNginx { port, child, dir };
        eventually("nginx to listen", || {
            let exited = nginx.child.try_wait().ok().flatten();
            let port = nginx.port;
            let dir = nginx.dir.path().to_path_buf();
            async move {
                if let Some(status) = exited {
                    let out = std::fs::read_to_string(dir.join("nginx.out")).unwrap_or_default();
                    let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
                    panic!("nginx exited ({status}): {out}{err}");
                }
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(drop)
            }
        })
        .await;
        nginx
    }

    /// `https://localhost:<port>`: the name the certificates are made for.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// One line per request nginx answered:
    /// `<protocol> <method> <uri> host=<Host> proto=<X-Forwarded-Proto>`.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for TlsNginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let read = |name: &str| {
                std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
            };
            eprintln!(
                "----- nginx error.log -----\n{}\n----- nginx access.log -----\n{}",
                read("error.log"),
                read("access.log")
            );
        }
    }
}

fn config(dir: &Path, port: u16, http2: bool) -> String {
    let d = dir.display();
    // nginx 1.22 (Debian 12) turns HTTP/2 on in `listen`; ALPN then offers
    // h2 and http/1.1.
    let h2 = if http2 { " http2" } else { "" };
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    log_format seen '$server_protocol $request_method $request_uri host=$http_host proto=$http_x_forwarded_proto';
    access_log {d}/access.log seen;
    server {{
        listen 127.0.0.1:{port} ssl{h2};
        server_name localhost;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        location / {{
            default_type application/json;
            add_header X-Backend-Protocol $server_protocol always;
            return 200 '{ANSWER}';
        }}
    }}
}}
"#
    )
}

/// nginx, installed with apt-get when missing and the tests run as root.
fn nginx_binary() -> PathBuf {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = find_nginx() {
        return found;
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        panic!(
            "nginx is not installed, and these tests are not root to install it: run `sudo apt-get install nginx` (Debian's nginx has http2)"
        );
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "nginx"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        install();
    }
    find_nginx().unwrap_or_else(|| panic!("nginx is missing and `apt-get install nginx` failed"))
}

fn find_nginx() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

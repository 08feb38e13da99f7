//! `leafcache check-config` through the real binary: exit codes and the
//! file:line:column: field message a user acts on.

use std::process::Command;

/// Cargo's binary, or `LEAFCACHE_BIN` when set (as `tests/common` does:
/// checkouts sharing one target directory name their own build).
fn leafcache_bin() -> std::ffi::OsString {
    std::env::var_os("LEAFCACHE_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_leafcache").into())
}

fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(leafcache_bin())
        .arg("check-config")
        .arg(&path)
        .env_remove("LEAFCACHE_LISTEN")
        .env_remove("PORT")
        .output()
        .expect("run leafcache");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_proxy_toml_is_valid() {
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml"))
        .expect("proxy.toml ships at the top level");
    let (code, stdout, stderr) = check(&shipped);
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(stdout.contains("ok (2 routes)"), "{stdout}");
}

#[test]
fn a_bad_value_exits_2_naming_file_line_and_field() {
    let (code, _, stderr) = check("[cache]\nl1_ttl = \"30s\"\nttl = \"5 parsecs\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("proxy.toml:3:"), "{stderr}");
    assert!(stderr.contains("cache.ttl"), "{stderr}");
}

#[test]
fn an_unknown_key_exits_2_naming_it() {
    let (code, _, stderr) = check("[redis]\nurl = \"redis://127.0.0.1:6379\"\npoolsize = 3\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("proxy.toml:3:"), "{stderr}");
    assert!(stderr.contains("poolsize"), "{stderr}");
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_is_a_config_error() {
    let (code, _, stderr) = check("admin_listen = \"0.0.0.0:9091\"\n");
    assert_eq!(code, 2);
    assert!(stderr.contains("admin_token"), "{stderr}");
}

#[test]
fn serve_with_a_bad_config_exits_2_before_binding_anything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        "[[route]]\nname = \"a\"\npath = \"/x\"\nlog = true\n",
    )
    .expect("write");
    let out = Command::new(leafcache_bin())
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("run leafcache");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("proxy.toml:"), "{stderr}");
    assert!(stderr.contains("log"), "{stderr}");
}

#[test]
fn serve_and_demo_still_take_redis_url_after_the_subcommand() {
    for command in ["serve", "demo"] {
        let out = Command::new(leafcache_bin())
            .args([command, "--redis-url", "http://not-redis"])
            .current_dir(tempfile::tempdir().expect("tempdir").path())
            .env_remove("REDIS_URL")
            .output()
            .expect("run leafcache");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(stderr.contains("--redis-url:"), "{command}: {stderr}");
    }
}

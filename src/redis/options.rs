//! How to reach Redis: the `[redis]` section of proxy.toml once validated
//! (the config module reads it; everything in `redis/` takes it from here).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::Prefix;

#[derive(Clone)]
pub struct RedisConfig {
    /// redis://, rediss:// (TLS), unix:// or redis+unix://; may carry a password.
    pub url: String,
    pub pool_size: u32,
    /// Per cache lookup; a slower answer counts as a miss.
    pub timeout: Duration,
    /// Prepended to every key, so several deployments can share one Redis;
    /// it also says whether keys carry cluster hash tags (`cluster`).
    pub key_prefix: Prefix,
    /// Redis Cluster (Memorystore cluster mode): `url` names one node (or
    /// the discovery endpoint) and the others are found from it.
    pub cluster: bool,
    /// `tls_ca_file`, resolved against the config file's folder.
    pub tls_ca_file: Option<PathBuf>,
    /// Its PEM text, read at startup: the only roots trusted for `rediss://`
    /// when set (the platform's roots otherwise).
    pub tls_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .field("key_prefix", &self.key_prefix.as_str())
            .field("cluster", &self.cluster)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

/// Redacts the password of a Redis URL for logs and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last '@' anywhere: a password may hold an unescaped '/' or '@',
    // and hiding too much beats showing a secret.
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_passwords_are_redacted() {
        assert_eq!(redact_url("redis://:pw@h:6379/0"), "redis://***@h:6379/0");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_url("rediss://leaf:a/b@c@h:6378"),
            "rediss://***@h:6378"
        );
    }
}

//! Behaviour of proxy.toml as a user meets it: defaults, the shipped file,
//! errors that point at the right line, and overrides.

use std::collections::HashMap;

use http::{HeaderName, Method};

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Some(Path::new("proxy.toml")))
}

/// The error's "line:column: field" and its message.
fn error_of(text: &str) -> (usize, usize, String, String) {
    match parse(text) {
        Err(ConfigError::Invalid {
            line,
            column,
            field,
            message,
            ..
        }) => (line, column, field, message),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

fn assert_error(text: &str, line: usize, column: usize, field: &str, needle: &str) {
    let (l, c, f, m) = error_of(text);
    assert_eq!((l, c, f.as_str()), (line, column, field), "message: {m}");
    assert!(m.contains(needle), "{m:?} should contain {needle:?}");
}

const ROUTE: &str = "[[route]]\nname = \"r\"\npath = \"/r\"\n";

fn no_env(_: &str) -> Option<String> {
    None
}

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

// --- the shipped file and the defaults -------------------------------------

#[test]
fn shipped_proxy_toml_loads_and_routes_search_and_orders() {
    let config = Config::builtin();
    assert_eq!(config.source, None);
    assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(config.upstream.url, "http://127.0.0.1:8000");
    assert_eq!(config.routes.len(), 2);

    let search = &config.routes[0];
    assert_eq!(search.name, "search");
    assert_eq!(
        search.methods,
        Methods::Only(vec![Method::GET, Method::POST])
    );
    assert_eq!(search.path, PathMatch::Exact("/api/v1/search".into()));
    assert_eq!(
        search.query,
        [Source::Json("/query".into()), Source::Query("q".into())]
    );
    assert_eq!(search.scope, Scope::User);
    assert_eq!(search.ttl, None);
    assert_eq!(search.freshness, Freshness::Route);
    assert!(search.log);
    assert_eq!(
        search.key_ignore,
        [
            Source::Json("/session_id".into()),
            Source::Json("/request_id".into())
        ]
    );
    assert_eq!(
        search.vary_headers,
        [HeaderName::from_static("accept-encoding")]
    );
    assert!(search.bypass_query.is_match("Add milk to my CART"));
    assert!(!search.bypass_query.is_match("organic milk"));
    assert_eq!(search.bypass_intents.len(), 5);
    assert_eq!(search.supplier_id, "/supplier");

    let orders = &config.routes[1];
    assert_eq!(orders.name, "orders");
    assert_eq!(orders.path, PathMatch::Prefix("/api/v1/order".into()));
    assert_eq!(orders.scope, Scope::Off);
    assert!(!orders.log);
    assert!(orders.matches(&Method::GET, "/api/v1/orders/42"));
    // A scope = "off" route without `methods` matches every method, so
    // order POSTs are marked BYPASS rather than passed through unmarked.
    assert_eq!(orders.methods, Methods::Any);
    assert!(orders.matches(&Method::POST, "/api/v1/order"));
    assert!(orders.matches(&Method::DELETE, "/api/v1/orders/42"));
    assert!(!orders.share_credentialed);
}

#[test]
fn shipped_proxy_toml_states_every_default() {
    let shipped = Config::builtin();
    let empty = Config::parse("", None).unwrap();
    assert_eq!(format!("{:?}", shipped.cache), format!("{:?}", empty.cache));
    assert_eq!(
        format!("{:?}", shipped.events),
        format!("{:?}", empty.events)
    );
    assert_eq!(format!("{:?}", shipped.redis), format!("{:?}", empty.redis));
    assert_eq!(
        format!("{:?}", shipped.identity),
        format!("{:?}", empty.identity)
    );
    assert_eq!(
        format!("{:?}", shipped.upstream),
        format!("{:?}", empty.upstream)
    );
}

#[test]
fn empty_file_is_valid_with_spec_defaults_and_no_routes() {
    let c = parse("").unwrap();
    assert!(c.routes.is_empty());
    assert_eq!(c.listen, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.admin_listen, "127.0.0.1:9091".parse().unwrap());
    assert_eq!(c.max_request_body, 64 * 1024);
    assert!(!c.trust_forwarded);
    assert_eq!(c.admin_token, None);
    assert_eq!(c.upstream.url, "http://127.0.0.1:8000");
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(1));
    assert_eq!(c.upstream.timeout, Duration::from_secs(10));
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(c.redis.pool_size, 16);
    assert_eq!(c.redis.timeout, Duration::from_millis(50));
    assert_eq!(c.redis.key_prefix.as_str(), "");
    assert!(!c.redis.key_prefix.hash_tags());
    assert!(!c.redis.cluster);
    assert_eq!(c.cache.ttl, Duration::from_secs(3600));
    assert_eq!(c.cache.l1_max_bytes, 64 << 20);
    assert_eq!(c.cache.l1_ttl, Duration::from_secs(30));
    assert_eq!(c.cache.max_object_bytes, 1 << 20);
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(600));
    assert_eq!(c.cache.cacheable_status, [200]);
    assert_eq!(c.cache.hit_for_pass, Duration::from_secs(120));
    assert_eq!(
        c.identity.user_id,
        [
            Source::Header(HeaderName::from_static("x-user-id")),
            Source::Json("/user_id".into()),
            Source::Query("user_id".into())
        ]
    );
    assert_eq!(c.identity.session_id.len(), 2);
    assert!(!c.identity.hash_user_id);
    assert_eq!(c.identity.max_bytes, 256);
    assert_eq!(c.events.queue_capacity, 100_000);
    assert_eq!(c.events.batch_max, 512);
    assert_eq!(c.events.flush_interval, Duration::from_millis(20));
    assert_eq!(c.events.history_limit, 1000);
    assert_eq!(c.events.retention, Duration::from_secs(90 * 86_400));
    assert_eq!(c.events.record_retention, Duration::from_secs(14 * 86_400));
    assert_eq!(c.events.counter_flush, Duration::from_secs(10));
    assert_eq!(c.events.spool_max_bytes, 1 << 30);
    assert_eq!((c.cache.refresh_ahead, c.cache.refresh_rate), (0, 10.0));
}

#[test]
fn counter_flush_and_refresh_rate_must_be_above_zero() {
    assert_error(
        "[events]\ncounter_flush = \"0s\"\n",
        2,
        17,
        "events.counter_flush",
        "more than 0",
    );
    for rate in ["0", "-1.5"] {
        let (_, _, field, message) = error_of(&format!("[cache]\nrefresh_rate = {rate}\n"));
        assert_eq!(field, "cache.refresh_rate", "{message}");
        assert!(message.contains("above 0"), "{message}");
    }
    let c = parse("[cache]\nrefresh_ahead = 50\nrefresh_rate = 2.5\n").unwrap();
    assert_eq!((c.cache.refresh_ahead, c.cache.refresh_rate), (50, 2.5));
}

#[test]
fn missing_keys_in_a_table_keep_their_defaults() {
    let c = parse("[cache]\nttl = \"5m\"\n").unwrap();
    assert_eq!(c.cache.ttl, Duration::from_secs(300));
    assert_eq!(c.cache.l1_ttl, Duration::from_secs(30));
}

#[test]
fn route_defaults_follow_the_spec() {
    let c = parse(ROUTE).unwrap();
    let r = &c.routes[0];
    assert_eq!(r.methods, Methods::Only(vec![Method::GET, Method::HEAD]));
    assert_eq!(r.scope, Scope::User);
    assert_eq!(r.freshness, Freshness::Route);
    assert!(!r.heuristic);
    assert!(!r.log, "no query rule: plain caching, no log");
    assert!(r.vary_headers.is_empty());
    assert!(r.bypass_query.is_empty());
    assert_eq!(
        (r.intent.as_str(), r.confidence.as_str(), r.results.as_str()),
        ("/intent", "/confidence", "/products")
    );
    assert_eq!(r.product_id, "/product_id");
}

#[test]
fn a_route_with_a_query_rule_logs_by_default() {
    let c = parse(&format!("{ROUTE}query = [\"query:q\"]\n")).unwrap();
    assert!(c.routes[0].log);
}

#[test]
fn route_ttl_and_origin_freshness_are_read() {
    let c = parse(&format!(
        "{ROUTE}ttl = \"1h30m\"\nfreshness = \"origin\"\nheuristic = true\nscope = \"auto\"\n"
    ))
    .unwrap();
    let r = &c.routes[0];
    assert_eq!(r.ttl, Some(Duration::from_secs(5400)));
    assert_eq!(r.freshness, Freshness::Origin);
    assert!(r.heuristic);
    assert_eq!(r.scope, Scope::Auto);
}

#[test]
fn headers_are_lowercased() {
    let c = parse(&format!(
        "[identity]\nuser_id = [\"header:X-User-Id\"]\n{ROUTE}vary_headers = [\"Accept-Language\"]\n"
    ))
    .unwrap();
    assert_eq!(
        c.identity.user_id,
        [Source::Header(HeaderName::from_static("x-user-id"))]
    );
    assert_eq!(
        c.routes[0].vary_headers,
        [HeaderName::from_static("accept-language")]
    );
}

#[test]
fn sizes_may_be_plain_byte_counts() {
    let c = parse("max_request_body = 1024\n[cache]\nl1_max_bytes = \"0\"\n").unwrap();
    assert_eq!(c.max_request_body, 1024);
    assert_eq!(c.cache.l1_max_bytes, 0);
}

#[test]
fn route_matching_checks_method_and_path() {
    let c = parse(&format!(
        "{ROUTE}[[route]]\nname = \"p\"\npath_prefix = \"/p/\"\n"
    ))
    .unwrap();
    assert!(c.routes[0].matches(&Method::GET, "/r"));
    assert!(!c.routes[0].matches(&Method::GET, "/r/x"));
    assert!(!c.routes[0].matches(&Method::DELETE, "/r"));
    assert!(c.routes[1].matches(&Method::HEAD, "/p/x"));
    assert!(!c.routes[1].matches(&Method::HEAD, "/px"));
}

// --- error location and wording ---------------------------------------------

#[test]
fn error_display_names_file_line_column_field_and_fix() {
    let text = "listen = \"0.0.0.0:8080\"\n\n[cache]\nttl = \"5 parsecs\"\n";
    assert_eq!(
        parse(text).unwrap_err().to_string(),
        r#"proxy.toml:4:7: cache.ttl: invalid duration "5 parsecs" (use a number with ms, s, m, h or d)"#
    );
}

#[test]
fn errors_without_a_file_name_the_builtin_config() {
    let err = Config::parse("[cache]\nttl = \"x\"\n", None).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("<built-in proxy.toml>:2:7: cache.ttl:"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_key_is_rejected_at_its_line() {
    assert_error(
        "listen = \"0.0.0.0:1\"\nlisten_port = 80\n",
        2,
        1,
        "listen_port",
        "unknown field",
    );
}

#[test]
fn unknown_key_in_each_table_is_rejected_at_its_line() {
    for table in ["upstream", "redis", "cache", "identity", "events"] {
        let text = format!("[{table}]\n  colour = 1\n");
        assert_error(
            &text,
            2,
            3,
            &format!("{table}.colour"),
            "unknown field `colour`",
        );
    }
}

#[test]
fn unknown_key_in_a_route_is_rejected_with_its_index() {
    let text = format!("{ROUTE}{ROUTE}cache_ttl = \"1h\"\n");
    assert_error(&text, 7, 1, "route[1].cache_ttl", "unknown field");
}

#[test]
fn unknown_key_in_an_inline_table_is_rejected() {
    assert_error(
        "upstream = { url = \"http://a:1\", tmeout = \"1s\" }\n",
        1,
        34,
        "upstream.tmeout",
        "unknown field",
    );
}

#[test]
fn wrong_types_name_what_was_expected() {
    assert_error(
        "trust_forwarded = \"yes\"\n",
        1,
        19,
        "trust_forwarded",
        "expected a boolean",
    );
    assert_error(
        "[redis]\npool_size = \"16\"\n",
        2,
        13,
        "redis.pool_size",
        "invalid type",
    );
    assert_error(
        "[cache]\nttl = true\n",
        2,
        7,
        "cache.ttl",
        "expected a duration",
    );
    assert_error(
        "[cache]\ncacheable_status = 200\n",
        2,
        20,
        "cache.cacheable_status",
        "expected a sequence",
    );
    assert_error("route = 3\n", 1, 9, "route", "expected a sequence");
}

#[test]
fn bare_integer_duration_says_to_add_a_unit() {
    assert_error(
        "[events]\nflush_interval = 20\n",
        2,
        18,
        "events.flush_interval",
        "\"20s\"",
    );
    assert_error(
        "[events]\nflush_interval = \"20\"\n",
        2,
        18,
        "events.flush_interval",
        "add a unit",
    );
}

#[test]
fn bad_size_names_the_field_and_units() {
    assert_error(
        "[cache]\nl1_max_bytes = \"64 MeB\"\n",
        2,
        16,
        "cache.l1_max_bytes",
        "KiB",
    );
    assert_error(
        "max_request_body = -1\n",
        1,
        20,
        "max_request_body",
        "negative",
    );
}

#[test]
fn zero_timeouts_and_retention_are_rejected() {
    assert_error(
        "[redis]\ntimeout = \"0ms\"\n",
        2,
        11,
        "redis.timeout",
        "more than 0",
    );
    assert_error(
        "[upstream]\nconnect_timeout = \"0s\"\n",
        2,
        19,
        "upstream.connect_timeout",
        "more than 0",
    );
    assert_error(
        "[upstream]\nidle_timeout = \"0s\"\n",
        2,
        16,
        "upstream.idle_timeout",
        "more than 0",
    );
    assert_error(
        "[events]\nretention = \"500ms\"\n",
        2,
        13,
        "events.retention",
        "at least 1s",
    );
    assert_error(
        "[events]\nrecord_retention = \"0s\"\n",
        2,
        20,
        "events.record_retention",
        "at least 1s",
    );
    assert_error(
        &format!("{ROUTE}ttl = \"0s\"\n"),
        4,
        7,
        "route[0].ttl",
        "more than 0",
    );
}

#[test]
fn counts_below_one_are_rejected() {
    assert_error(
        "[redis]\npool_size = 0\n",
        2,
        13,
        "redis.pool_size",
        "at least 1",
    );
    assert_error(
        "[events]\nbatch_max = 0\n",
        2,
        13,
        "events.batch_max",
        "at least 1",
    );
    assert_error(
        "[events]\nqueue_capacity = -5\n",
        2,
        18,
        "events.queue_capacity",
        "invalid value",
    );
}

#[test]
fn bad_regex_names_the_pattern_and_its_index() {
    let text = format!("{ROUTE}bypass_query = ['ok', '(?i)(cart']\n");
    let (l, c, f, m) = error_of(&text);
    assert_eq!((l, c, f.as_str()), (4, 23, "route[0].bypass_query[1]"));
    assert!(
        m.contains("(?i)(cart") && m.contains("unclosed group"),
        "{m}"
    );
}

#[test]
fn bad_source_names_the_allowed_forms() {
    let text = "[identity]\nuser_id = [\"header:x-user-id\", \"cookie:uid\"]\n";
    assert_error(
        text,
        2,
        32,
        "identity.user_id[1]",
        "\"header:NAME\", \"json:/pointer\" or \"query:NAME\"",
    );
    assert_error(
        &format!("{ROUTE}query = [\"json:query\"]\n"),
        4,
        10,
        "route[0].query[0]",
        "start with '/'",
    );
}

#[test]
fn lowercase_or_invalid_method_is_rejected() {
    assert_error(
        &format!("{ROUTE}methods = [\"GET\", \"post\"]\n"),
        4,
        19,
        "route[0].methods[1]",
        "uppercase",
    );
    assert_error(
        &format!("{ROUTE}methods = [\"G T\"]\n"),
        4,
        12,
        "route[0].methods[0]",
        "invalid method",
    );
    assert_error(
        &format!("{ROUTE}methods = []\n"),
        4,
        11,
        "route[0].methods",
        "at least one method",
    );
}

#[test]
fn status_outside_100_to_599_is_rejected() {
    assert_error(
        "[cache]\ncacheable_status = [200, 99]\n",
        2,
        26,
        "cache.cacheable_status[1]",
        "100..=599",
    );
    assert_error(
        "[cache]\ncacheable_status = [600]\n",
        2,
        21,
        "cache.cacheable_status[0]",
        "100..=599",
    );
}

#[test]
fn bad_upstream_urls_are_rejected_with_reasons() {
    assert_error(
        "[upstream]\nurl = \"ftp://api.example.com\"\n",
        2,
        7,
        "upstream.url",
        "https://host",
    );
    assert_error(
        "[upstream]\nurl = \"http://backend:8000/api\"\n",
        2,
        7,
        "upstream.url",
        "path",
    );
    assert_error(
        "[upstream]\nurl = \"backend:8000\"\n",
        2,
        7,
        "upstream.url",
        "http://host:port",
    );
}

#[test]
fn bad_redis_url_is_rejected() {
    assert_error(
        "[redis]\nurl = \"http://127.0.0.1:6379\"\n",
        2,
        7,
        "redis.url",
        "redis://",
    );
}

#[test]
fn cluster_mode_tags_per_user_keys() {
    let c = parse("[redis]\ncluster = true\nkey_prefix = \"app:\"\n").unwrap();
    assert!(c.redis.cluster);
    assert!(c.redis.key_prefix.hash_tags());
    assert_eq!(c.redis.key_prefix.as_str(), "app:");
}

#[test]
fn a_hash_tag_in_the_prefix_is_rejected_in_cluster_mode() {
    assert_error(
        "[redis]\ncluster = true\nkey_prefix = \"{app}:\"\n",
        3,
        14,
        "redis.key_prefix",
        "hash tag",
    );
    assert!(parse("[redis]\nkey_prefix = \"{app}:\"\n").is_ok());
}

#[test]
fn bad_listen_address_is_rejected() {
    assert_error("listen = \"localhost:8080\"\n", 1, 10, "listen", "IP:PORT");
}

#[test]
fn bad_scope_lists_the_choices() {
    assert_error(
        &format!("{ROUTE}scope = \"users\"\n"),
        4,
        9,
        "route[0].scope",
        "`user`, `global`, `auto`, `off`",
    );
}

#[test]
fn bad_response_pointer_is_rejected() {
    assert_error(
        &format!("{ROUTE}results = \"products\"\n"),
        4,
        11,
        "route[0].results",
        "start with '/'",
    );
}

#[test]
fn toml_syntax_errors_are_located() {
    let (l, c, f, _) = error_of("listen = \"0.0.0.0:8080\"\n[cache\nttl = \"1h\"\n");
    assert_eq!((l, f.as_str()), (2, "syntax"));
    assert!(c >= 1);
}

#[test]
fn empty_admin_token_is_rejected() {
    assert_error(
        "admin_token = \"\"\n",
        1,
        15,
        "admin_token",
        "must not be empty",
    );
}

// --- checks across fields ---------------------------------------------------

#[test]
fn route_without_name_is_rejected_at_its_header() {
    assert_error(
        "[cache]\n\n[[route]]\npath = \"/a\"\n",
        3,
        1,
        "route[0].name",
        "missing field `name`",
    );
    assert_error(
        "[[route]]\nname = \" \"\npath = \"/a\"\n",
        2,
        8,
        "route[0].name",
        "must not be empty",
    );
}

#[test]
fn route_with_neither_path_nor_prefix_is_rejected_at_its_header() {
    let text = format!("{ROUTE}\n[[route]]\nname = \"lost\"\n");
    assert_error(&text, 5, 1, "route[1]", "needs path (exact) or path_prefix");
}

#[test]
fn route_with_both_path_and_prefix_is_rejected() {
    let text = format!("{ROUTE}path_prefix = \"/r/\"\n");
    assert_error(&text, 4, 15, "route[0].path_prefix", "not both");
}

#[test]
fn route_paths_must_start_with_a_slash() {
    assert_error(
        "[[route]]\nname = \"a\"\npath = \"api\"\n",
        3,
        8,
        "route[0].path",
        "start with '/'",
    );
}

#[test]
fn log_without_query_rule_is_rejected() {
    let text = format!("{ROUTE}log = true\n");
    assert_error(&text, 4, 7, "route[0].log", "needs a query rule");
}

#[test]
fn log_false_silences_a_search_route() {
    let c = parse(&format!("{ROUTE}query = [\"query:q\"]\nlog = false\n")).unwrap();
    assert!(!c.routes[0].log);
}

#[test]
fn duplicate_route_names_are_rejected_at_the_second() {
    let text = format!("{ROUTE}\n[[route]]\nname = \"r\"\npath = \"/other\"\n");
    assert_error(&text, 6, 8, "route[1].name", "duplicate route name \"r\"");
}

#[test]
fn header_sources_are_refused_in_key_ignore() {
    let text = format!("{ROUTE}key_ignore = [\"query:ts\", \"header:x-request-id\"]\n");
    assert_error(&text, 4, 27, "route[0].key_ignore[1]", "json: and query:");
}

#[test]
fn heuristic_on_a_route_freshness_route_is_rejected() {
    assert_error(
        &format!("{ROUTE}heuristic = true\n"),
        4,
        13,
        "route[0].heuristic",
        "freshness = \"origin\"",
    );
}

#[test]
fn errors_in_inline_route_arrays_are_located_too() {
    let text = "route = [\n  { name = \"a\", path = \"/a\", log = true },\n]\n";
    assert_error(text, 2, 36, "route[0].log", "needs a query rule");
}

// --- spool_dir ----------------------------------------------------------------

#[test]
fn relative_spool_dir_is_resolved_against_the_config_folder() {
    let c = Config::parse("", Some(Path::new("/etc/leafcache/proxy.toml"))).unwrap();
    assert_eq!(c.events.spool_dir, Path::new("/etc/leafcache/spool"));
    let c = Config::parse(
        "[events]\nspool_dir = \"../var/q\"\n",
        Some(Path::new("/etc/leafcache/proxy.toml")),
    )
    .unwrap();
    assert_eq!(c.events.spool_dir, Path::new("/etc/leafcache/../var/q"));
}

#[test]
fn absolute_spool_dir_is_kept() {
    let c = Config::parse(
        "[events]\nspool_dir = \"/var/spool/lc\"\n",
        Some(Path::new("/etc/proxy.toml")),
    )
    .unwrap();
    assert_eq!(c.events.spool_dir, Path::new("/var/spool/lc"));
}

#[test]
fn builtin_spool_dir_is_resolved_against_the_working_directory() {
    let c = Config::builtin();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.events.spool_dir, cwd.join("spool"));
}

#[test]
fn a_config_file_in_the_working_directory_spools_next_to_it() {
    let c = Config::parse("", Some(Path::new("proxy.toml"))).unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(c.events.spool_dir, cwd.join("spool"));
}

// --- redis.tls_ca_file ---------------------------------------------------------

/// A folder holding `proxy.toml`'s neighbours; removed on drop.
fn temp_folder() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["redis.test".to_owned()])
        .unwrap()
        .cert
        .pem()
}

#[test]
fn tls_ca_file_is_off_by_default() {
    let c = parse("").unwrap();
    assert!(c.redis.tls_ca_file.is_none());
    assert!(c.redis.tls_ca_pem.is_none());
}

#[test]
fn tls_ca_file_is_read_relative_to_the_config_folder() {
    let dir = temp_folder();
    let pem = ca_pem();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/server-ca.pem"), &pem).unwrap();
    let c = Config::parse(
        "[redis]\nurl = \"rediss://10.0.0.3:6378\"\ntls_ca_file = \"certs/server-ca.pem\"\n",
        Some(&dir.path().join("proxy.toml")),
    )
    .unwrap();
    assert_eq!(
        c.redis.tls_ca_file.as_deref(),
        Some(dir.path().join("certs/server-ca.pem").as_path())
    );
    assert_eq!(c.redis.tls_ca_pem.as_deref(), Some(pem.as_bytes()));
}

#[test]
fn absolute_tls_ca_file_is_kept() {
    let dir = temp_folder();
    let file = dir.path().join("ca.pem");
    std::fs::write(&file, ca_pem()).unwrap();
    let text = format!("[redis]\ntls_ca_file = {:?}\n", file.display().to_string());
    let c = Config::parse(&text, Some(Path::new("/etc/leafcache/proxy.toml"))).unwrap();
    assert_eq!(c.redis.tls_ca_file.as_deref(), Some(file.as_path()));
}

#[test]
fn missing_tls_ca_file_is_a_config_error_naming_the_key() {
    let dir = temp_folder();
    let text = "[redis]\nurl = \"rediss://h:6378\"\ntls_ca_file = \"nope.pem\"\n";
    match Config::parse(text, Some(&dir.path().join("proxy.toml"))) {
        Err(ConfigError::Invalid {
            line,
            field,
            message,
            ..
        }) => {
            assert_eq!((line, field.as_str()), (3, "redis.tls_ca_file"));
            assert!(message.contains("cannot read"), "{message}");
            assert!(message.contains("nope.pem"), "{message}");
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn tls_ca_file_without_a_certificate_is_a_config_error() {
    let dir = temp_folder();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let text = "[redis]\ntls_ca_file = \"ca.pem\"\n";
    match Config::parse(text, Some(&dir.path().join("proxy.toml"))) {
        Err(ConfigError::Invalid { field, message, .. }) => {
            assert_eq!(field, "redis.tls_ca_file");
            assert!(message.contains("no PEM certificate"), "{message}");
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn tls_ca_file_with_a_broken_certificate_is_a_config_error() {
    let dir = temp_folder();
    let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    std::fs::write(dir.path().join("ca.pem"), broken).unwrap();
    let text = "[redis]\ntls_ca_file = \"ca.pem\"\n";
    match Config::parse(text, Some(&dir.path().join("proxy.toml"))) {
        Err(ConfigError::Invalid { field, message, .. }) => {
            assert_eq!(field, "redis.tls_ca_file");
            assert!(message.contains("ca.pem"), "{message}");
        }
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

// --- upstream.ca_file ------------------------------------------------------

#[test]
fn https_upstreams_are_accepted_with_or_without_a_port() {
    let c = parse("[upstream]\nurl = \"https://search.example.run.app\"\n").unwrap();
    assert_eq!(c.upstream.url, "https://search.example.run.app/");
    assert!(c.upstream.ca_file.is_none() && c.upstream.ca_pem.is_none());
    let c = parse("[upstream]\nurl = \"https://10.0.0.7:8443\"\n").unwrap();
    assert_eq!(c.upstream.url.port_u16(), Some(8443));
}

#[test]
fn upstream_ca_file_is_read_relative_to_the_config_folder() {
    let dir = temp_folder();
    let pem = ca_pem();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/private-ca.pem"), &pem).unwrap();
    let c = Config::parse(
        "[upstream]\nurl = \"https://backend:8443\"\nca_file = \"certs/private-ca.pem\"\n",
        Some(&dir.path().join("proxy.toml")),
    )
    .unwrap();
    assert_eq!(
        c.upstream.ca_file.as_deref(),
        Some(dir.path().join("certs/private-ca.pem").as_path())
    );
    assert_eq!(c.upstream.ca_pem.as_deref(), Some(pem.as_bytes()));
    let shown = format!("{:?}", c.upstream);
    assert!(shown.contains("private-ca.pem"), "{shown}");
    assert!(
        !shown.contains("BEGIN"),
        "the PEM text is not shown: {shown}"
    );
}

/// The error for `[upstream] ca_file = <name>` written in a fresh folder
/// with `contents` (none: the file is missing): line, field and message.
fn upstream_ca_error(contents: Option<&str>) -> (usize, String, String) {
    let dir = temp_folder();
    if let Some(contents) = contents {
        std::fs::write(dir.path().join("ca.pem"), contents).unwrap();
    }
    let text = "[upstream]\nurl = \"https://backend\"\nca_file = \"ca.pem\"\n";
    match Config::parse(text, Some(&dir.path().join("proxy.toml"))) {
        Err(ConfigError::Invalid {
            line,
            field,
            message,
            ..
        }) => (line, field, message),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn missing_upstream_ca_file_is_a_config_error_naming_file_line_and_field() {
    let (line, field, message) = upstream_ca_error(None);
    assert_eq!((line, field.as_str()), (3, "upstream.ca_file"));
    assert!(message.contains("cannot read"), "{message}");
    assert!(message.contains("ca.pem"), "{message}");
}

#[test]
fn upstream_ca_file_without_a_certificate_is_a_config_error() {
    let (line, field, message) = upstream_ca_error(Some("not a certificate\n"));
    assert_eq!((line, field.as_str()), (3, "upstream.ca_file"));
    assert!(message.contains("no PEM certificate"), "{message}");
}

#[test]
fn upstream_ca_file_with_a_broken_certificate_is_a_config_error() {
    let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let (line, field, message) = upstream_ca_error(Some(broken));
    assert_eq!((line, field.as_str()), (3, "upstream.ca_file"));
    assert!(message.contains("ca.pem"), "{message}");
}

#[test]
fn debug_of_the_redis_config_shows_the_ca_file_but_not_the_password() {
    let dir = temp_folder();
    std::fs::write(dir.path().join("ca.pem"), ca_pem()).unwrap();
    let text = "[redis]\nurl = \"rediss://leaf:s3cret@h:6378\"\ntls_ca_file = \"ca.pem\"\n";
    let c = Config::parse(text, Some(&dir.path().join("proxy.toml"))).unwrap();
    let shown = format!("{c:?}");
    assert!(shown.contains("ca.pem"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!shown.contains("BEGIN CERTIFICATE"), "{shown}");
}

// --- load -----------------------------------------------------------------------

#[test]
fn load_reads_a_file_and_remembers_it() {
    let dir = std::env::temp_dir().join(format!("leafcache-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("proxy.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:1234\"\n").unwrap();
    let c = Config::load(&file).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(c.source.as_deref(), Some(file.as_path()));
    assert_eq!(c.listen, "127.0.0.1:1234".parse().unwrap());
    assert_eq!(c.events.spool_dir, dir.join("spool"));
}

#[test]
fn load_of_a_missing_file_names_it() {
    let err = Config::load(Path::new("/nonexistent/leafcache.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(
        err.to_string().starts_with("/nonexistent/leafcache.toml: "),
        "{err}"
    );
}

// --- overrides ------------------------------------------------------------------

#[test]
fn no_overrides_keep_the_file() {
    let mut c = parse("listen = \"127.0.0.1:1\"\n").unwrap();
    c.apply_overrides(&Overrides::default(), &no_env).unwrap();
    assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
}

#[test]
fn listen_precedence_is_flag_then_env_then_port_then_file() {
    let base = parse("listen = \"127.0.0.1:1\"\n").unwrap();
    let all = env_of(&[("LEAFCACHE_LISTEN", "127.0.0.1:2"), ("PORT", "3")]);
    let flag = Overrides {
        listen: Some("127.0.0.1:4".into()),
        ..Overrides::default()
    };

    let mut c = base.clone();
    c.apply_overrides(&flag, &all).unwrap();
    assert_eq!(c.listen, "127.0.0.1:4".parse().unwrap());

    let mut c = base.clone();
    c.apply_overrides(&Overrides::default(), &all).unwrap();
    assert_eq!(c.listen, "127.0.0.1:2".parse().unwrap());

    let mut c = base.clone();
    c.apply_overrides(&Overrides::default(), &env_of(&[("PORT", "3")]))
        .unwrap();
    assert_eq!(c.listen, "0.0.0.0:3".parse().unwrap());
}

#[test]
fn empty_environment_variables_count_as_unset() {
    let mut c = parse("listen = \"127.0.0.1:1\"\n").unwrap();
    c.apply_overrides(
        &Overrides::default(),
        &env_of(&[("PORT", ""), ("REDIS_URL", "")]),
    )
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:1".parse().unwrap());
    assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
}

#[test]
fn upstream_precedence_is_flag_then_env_then_file() {
    let env = env_of(&[("LEAFCACHE_UPSTREAM", "http://env:1")]);
    let mut c = parse("").unwrap();
    c.apply_overrides(&Overrides::default(), &env).unwrap();
    assert_eq!(c.upstream.url, "http://env:1");
    let flag = Overrides {
        upstream: Some("http://flag:2".into()),
        ..Overrides::default()
    };
    c.apply_overrides(&flag, &env).unwrap();
    assert_eq!(c.upstream.url, "http://flag:2");
}

#[test]
fn redis_precedence_is_flag_then_env_then_file() {
    let env = env_of(&[("REDIS_URL", "redis://env:6379")]);
    let mut c = parse("[redis]\nurl = \"redis://file:6379\"\n").unwrap();
    assert_eq!(c.redis.url, "redis://file:6379");
    c.apply_overrides(&Overrides::default(), &env).unwrap();
    assert_eq!(c.redis.url, "redis://env:6379");
    let flag = Overrides {
        redis_url: Some("rediss://flag:6380".into()),
        ..Overrides::default()
    };
    c.apply_overrides(&flag, &env).unwrap();
    assert_eq!(c.redis.url, "rediss://flag:6380");
}

#[test]
fn admin_token_comes_from_the_environment_over_the_file() {
    let mut c = parse("admin_token = \"file\"\n").unwrap();
    c.apply_overrides(&Overrides::default(), &no_env).unwrap();
    assert_eq!(c.admin_token.as_deref(), Some("file"));
    c.apply_overrides(
        &Overrides::default(),
        &env_of(&[("LEAFCACHE_ADMIN_TOKEN", "env")]),
    )
    .unwrap();
    assert_eq!(c.admin_token.as_deref(), Some("env"));
}

#[test]
fn bad_override_values_name_the_flag_or_variable() {
    type Case = (Overrides, Vec<(&'static str, &'static str)>, &'static str);
    let cases: [Case; 6] = [
        (
            Overrides {
                listen: Some("nope".into()),
                ..Overrides::default()
            },
            vec![],
            "--listen: ",
        ),
        (
            Overrides::default(),
            vec![("LEAFCACHE_LISTEN", "nope")],
            "LEAFCACHE_LISTEN: ",
        ),
        (Overrides::default(), vec![("PORT", "80800")], "PORT: "),
        (
            Overrides {
                upstream: Some("https://x/api".into()),
                ..Overrides::default()
            },
            vec![],
            "--upstream: ",
        ),
        (
            Overrides::default(),
            vec![("LEAFCACHE_UPSTREAM", "x")],
            "LEAFCACHE_UPSTREAM: ",
        ),
        (
            Overrides::default(),
            vec![("REDIS_URL", "http://:secret@x")],
            "REDIS_URL: ",
        ),
    ];
    for (flags, vars, prefix) in cases {
        let mut c = parse("").unwrap();
        let err = c.apply_overrides(&flags, &env_of(&vars)).unwrap_err();
        assert!(matches!(err, ConfigError::Override { .. }));
        let text = err.to_string();
        assert!(
            text.starts_with(prefix),
            "{text} should start with {prefix}"
        );
        assert!(!text.contains("secret"), "{text}");
    }
}

#[test]
fn a_flag_hides_a_bad_variable_it_overrides() {
    let mut c = parse("").unwrap();
    let flags = Overrides {
        listen: Some("127.0.0.1:5".into()),
        ..Overrides::default()
    };
    c.apply_overrides(&flags, &env_of(&[("PORT", "junk")]))
        .unwrap();
    assert_eq!(c.listen, "127.0.0.1:5".parse().unwrap());
}

// --- listeners ------------------------------------------------------------------

#[test]
fn admin_listener_off_loopback_without_token_is_refused() {
    let c = parse("admin_listen = \"0.0.0.0:9091\"\n").unwrap();
    let err = c.validate_listeners().unwrap_err();
    assert!(matches!(err, ConfigError::Listener { .. }));
    assert!(err.to_string().contains("admin_token"), "{err}");
}

#[test]
fn admin_listener_off_loopback_with_token_is_accepted() {
    let c = parse("admin_listen = \"0.0.0.0:9091\"\nadmin_token = \"s3cret\"\n").unwrap();
    c.validate_listeners().unwrap();
    let mut c = parse("admin_listen = \"[::]:9091\"\n").unwrap();
    c.apply_overrides(
        &Overrides::default(),
        &env_of(&[("LEAFCACHE_ADMIN_TOKEN", "t")]),
    )
    .unwrap();
    c.validate_listeners().unwrap();
}

#[test]
fn loopback_admin_listener_needs_no_token() {
    parse("").unwrap().validate_listeners().unwrap();
    parse("admin_listen = \"[::1]:9091\"\n")
        .unwrap()
        .validate_listeners()
        .unwrap();
}

#[test]
fn listen_and_admin_on_the_same_address_are_refused() {
    let c = parse("listen = \"127.0.0.1:9091\"\n").unwrap();
    assert!(c.validate_listeners().is_err());
}

#[test]
fn debug_output_hides_secrets() {
    let c = parse("admin_token = \"tok3n\"\n[redis]\nurl = \"redis://:pa55@h:6379\"\n").unwrap();
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("tok3n") && !shown.contains("pa55"),
        "{shown}"
    );
}

#[test]
fn header_read_timeout_defaults_to_10s_and_is_set_at_the_top_level() {
    assert_eq!(
        parse("").unwrap().header_read_timeout,
        Duration::from_secs(10)
    );
    let c = parse("header_read_timeout = \"500ms\"\n").unwrap();
    assert_eq!(c.header_read_timeout, Duration::from_millis(500));
    assert_error(
        "header_read_timeout = \"0s\"\n",
        1,
        23,
        "header_read_timeout",
        "more than 0",
    );
    assert_error(
        "header_read_timeout = \"10\"\n",
        1,
        23,
        "header_read_timeout",
        "add a unit",
    );
}

#[test]
fn max_connections_defaults_to_10000_and_must_be_at_least_1() {
    assert_eq!(parse("").unwrap().max_connections, 10_000);
    assert_eq!(parse("max_connections = 4\n").unwrap().max_connections, 4);
    assert_error(
        "max_connections = 0\n",
        1,
        19,
        "max_connections",
        "at least 1",
    );
}

#[test]
fn an_admin_token_is_trimmed_as_the_presented_one_is() {
    let c = parse("admin_token = \"s3cret\\n\"\n").unwrap();
    assert_eq!(c.admin_token.as_deref(), Some("s3cret"));
    assert_error(
        "admin_token = \" \\n\"\n",
        1,
        15,
        "admin_token",
        "must not be empty",
    );
}

#[test]
fn identity_max_bytes_is_a_positive_count_checked_at_its_line() {
    let c = parse("[identity]\nmax_bytes = 64\n").unwrap();
    assert_eq!(c.identity.max_bytes, 64);
    assert_error(
        "[identity]\nmax_bytes = 0\n",
        2,
        13,
        "identity.max_bytes",
        "must be at least 1",
    );
    assert_error(
        "[identity]\nmax_bytes = \"lots\"\n",
        2,
        13,
        "identity.max_bytes",
        "invalid type",
    );
}

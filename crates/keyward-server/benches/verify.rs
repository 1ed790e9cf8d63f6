//! keyward's in-process micro-benchmarks, each printed beside a baseline measured in the same run
//! (alternating rounds or interleaved operations), because these machines are shared and noisy:
//! only a ratio measured side by side means anything.
//!
//! `cargo bench -p keyward-server --bench verify` prints:
//! 1. cached verification vs. its physical floor, one HMAC-SHA256 of the token plus one std
//!    `HashMap` lookup among as many entries, at 10^3 tokens and at a larger N (10^5 by default,
//!    `KEYWARD_BENCH_LARGE=1000000` for 10^6; for 10^7, `KEYWARD_BENCH_LARGE_DIR=DIR` with a
//!    store seeded beforehand: `DIR/keyward.db` and `DIR/secrets` as `bench/tools`' `seed` writes
//!    them, under `KEYWARD_SERVER_KEY`); the cache is filled by the start-up warming `keyward
//!    serve` runs; criterion's figures first, then the interleaved ratio;
//! 2. cold verification (a cache miss) on SQLite and on PostgreSQL, beside the bare store lookup
//!    it makes (HMAC plus `TokenStore::lookup`), interleaved per operation; PostgreSQL is skipped with a
//!    notice when `psql` cannot create a database at `KEYWARD_BENCH_PG`
//!    (default `postgres://postgres@127.0.0.1:5432`);
//! 3. token creation, beside the bare `Store::insert_token` of a prepared record;
//! 4. token creation by 32 creators at once beside one creator (creations per second and
//!    latency), on SQLite and PostgreSQL;
//! 5. cached verification during a key rotation (a ring of two keys, every token under the
//!    current one) beside the same with a ring of one, alternating rounds.
//!
//! `KEYWARD_BENCH_CREATION_ONLY=1` runs only 3 and 4. `KEYWARD_BENCH_CREATIONS_EACH=N` has each
//! of the 32 creators of 4 make N tokens a round instead of 16: a longer run, whose writes no
//! longer pause before the write-ahead log reaches its forced checkpoint.
//!
//! Stores are seeded in one transaction through `Maintenance::restore` (`keyward_bench::synthetic`),
//! never one service call per token.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![expect(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failure should stop the run loudly"
)]

use criterion::{BenchmarkId, Criterion};
use hmac::{Hmac, KeyInit, Mac};
use keyward_core::{
    Actor, AuditEvent, AuditKind, KeyRing, Scopes, ServerKey, SystemClock, TokenHasher, TokenName,
    TokenSecret,
};
use keyward_server::service::{Caller, Keyward, Settings, Verdict};
use keyward_store::{Maintenance as _, PgStore, Snapshot, SqliteStore, Store, StoredHash};
use sha2::Sha256;
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The small cache size.
const SMALL: usize = 1_000;
/// The large cache size unless `KEYWARD_BENCH_LARGE` says otherwise.
const LARGE: usize = 100_000;
/// Cold verifications measured per engine.
const COLD: usize = 3_000;
/// Tokens created in the creation benchmark (each a durable commit).
const CREATED: usize = 300;
/// Tokens per user in seeded stores.
const PER_USER: usize = 10;

// ------------------------------------------------------------------------------- cached path

struct Cached {
    keyward: Arc<Keyward>,
    /// Secrets in the order the rounds visit them (a fixed stride through creation order, so
    /// consecutive lookups land far apart in memory, for both sides).
    secrets: Vec<String>,
    baseline_key: Hmac<Sha256>,
    baseline_map: HashMap<[u8; 32], u64>,
    _dir: Option<tempfile::TempDir>,
}

/// Polls a future that is expected to be ready at once (the cached path never waits), falling
/// back to the runtime if it is not.
fn run_now<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => rt.block_on(fut),
    }
}

fn seeded(hasher: &TokenHasher, tokens: usize) -> (Snapshot, Vec<String>) {
    let (snapshot, secrets) = keyward_bench::synthetic(hasher, tokens, PER_USER).unwrap();
    let secrets = secrets
        .iter()
        .map(|s| TokenSecret::expose(s).to_owned())
        .collect();
    (snapshot, secrets)
}

/// A store of `tokens` hashed under the current key of a ring of `ring` keys, every token cached.
fn cached_setup(rt: &tokio::runtime::Runtime, tokens: usize, ring: usize) -> Cached {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<ServerKey> = (0..ring).map(|_| ServerKey::generate().unwrap()).collect();
    let hasher = TokenHasher::new(&keys[0]);
    let (snapshot, secrets) = seeded(&hasher, tokens);
    let store = rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("keyward.db"))
            .await
            .unwrap();
        store.restore(&snapshot).await.unwrap();
        store
    });
    drop(snapshot);
    cached_over(rt, store, &keys, secrets, started, Some(dir))
}

/// A store seeded beforehand, in `dir`: `keyward.db` as `bench/tools`' `seed` makes it, the
/// secrets one per line in `secrets`, hashed under `KEYWARD_SERVER_KEY` (seeding 10^7 tokens
/// in this process would hold them all in memory twice).
fn seeded_dir_setup(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Cached {
    let started = Instant::now();
    // The seeded store's key.
    let key = ServerKey::from_hex(&std::env::var("KEYWARD_SERVER_KEY").unwrap()).unwrap();
    let secrets: Vec<String> = std::fs::read_to_string(dir.join("secrets"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let store = rt
        .block_on(SqliteStore::open(&dir.join("keyward.db")))
        .unwrap();
    cached_over(rt, store, &[key], secrets, started, None)
}

/// The service over `store` (its tokens' `secrets` hashed under `keys[0]`), every token cached.
fn cached_over(
    rt: &tokio::runtime::Runtime,
    store: SqliteStore,
    keys: &[ServerKey],
    secrets: Vec<String>,
    started: Instant,
    dir: Option<tempfile::TempDir>,
) -> Cached {
    let tokens = secrets.len();
    let keyward = rt.block_on(async {
        let settings = Settings {
            // Room for every token, so the rounds measure hits only.
            cache_capacity: (tokens as u64) * 2,
            ..Settings::default()
        };
        let ring = KeyRing::new(keys).unwrap();
        Arc::new(
            Keyward::new(Arc::new(store), Arc::new(SystemClock), ring, settings)
                .await
                .unwrap(),
        )
    });
    // Warm the cache as `keyward serve` does at start-up (pages of the store, not one cold
    // lookup per token), then check every token is a hit.
    let warmed = rt.block_on(keyward.warm_cache()).unwrap();
    assert!(
        warmed.finished && warmed.entries == tokens as u64,
        "{warmed:?}"
    );
    for s in &secrets {
        assert!(matches!(
            rt.block_on(keyward.verify(s, &Scopes::default(), None)),
            Ok(Verdict::Active(_))
        ));
    }
    let stride = 7_919 % tokens.max(1);
    let secrets: Vec<String> = (0..tokens)
        .map(|i| secrets[(i * stride.max(1)) % tokens].clone())
        .collect();
    let baseline_key = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
    let baseline_map = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| (baseline_hash(&baseline_key, s), i as u64))
        .collect();
    println!(
        "set-up: {tokens} tokens seeded and cached in {:.1} s ({} key(s) in the ring)",
        started.elapsed().as_secs_f64(),
        keys.len()
    );
    Cached {
        keyward,
        secrets,
        baseline_key,
        baseline_map,
        _dir: dir,
    }
}

fn baseline_hash(key: &Hmac<Sha256>, token: &str) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().into()
}

fn baseline_once(s: &Cached, token: &str) -> Option<u64> {
    s.baseline_map
        .get(&baseline_hash(&s.baseline_key, token))
        .copied()
}

/// One cached verification as `/v1/verify` and `/v1/auth` make it: the answer is the token's id
/// (as the baseline's is the map's value), read in place without cloning the entry.
fn verify_once(rt: &tokio::runtime::Runtime, s: &Cached, token: &str, wanted: &Scopes) -> bool {
    matches!(
        run_now(
            rt,
            s.keyward
                .verify_with(token, wanted, None, |t, _| black_box(t.id_packed()))
        ),
        Ok(Ok(_))
    )
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, s: &Cached) {
    let n = s.secrets.len();
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let mut group = c.benchmark_group("cached_verify");
    let mut i = 0usize;
    group.bench_function(
        BenchmarkId::new("baseline_hmac_sha256_plus_hashmap", n),
        |b| {
            b.iter(|| {
                i = (i + 1) % n;
                black_box(baseline_once(s, black_box(&s.secrets[i])))
            })
        },
    );
    group.bench_function(BenchmarkId::new("keyward_verify", n), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(verify_once(rt, s, black_box(&s.secrets[i]), &wanted))
        })
    });
    group.finish();
}

/// Alternates rounds of the baseline and of keyward, so both see the same machine state, and
/// returns the medians (ns per operation).
fn cached_ratio(rt: &tokio::runtime::Runtime, s: &Cached) -> (f64, f64) {
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 100_000;
    let n = s.secrets.len();
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let (mut base, mut kw) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    let mut next = 0usize;
    for _ in 0..ROUNDS {
        let from = next;
        let t = Instant::now();
        for i in 0..PER_ROUND {
            black_box(baseline_once(s, black_box(&s.secrets[(from + i) % n])));
        }
        base.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        let t = Instant::now();
        for i in 0..PER_ROUND {
            assert!(verify_once(
                rt,
                s,
                black_box(&s.secrets[(from + i) % n]),
                &wanted
            ));
        }
        kw.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        next = (from + PER_ROUND) % n;
    }
    (median(&mut base), median(&mut kw))
}

/// Alternates rounds of cached verification on a one-key service and on a two-key one (every
/// token under the current key), and returns the medians (ns per operation).
fn ring_ratio(rt: &tokio::runtime::Runtime, one: &Cached, two: &Cached) -> (f64, f64) {
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 100_000;
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let (mut a, mut b) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    let mut next = 0usize;
    for _ in 0..ROUNDS {
        for (s, out) in [(one, &mut a), (two, &mut b)] {
            let n = s.secrets.len();
            let t = Instant::now();
            for i in 0..PER_ROUND {
                assert!(verify_once(
                    rt,
                    s,
                    black_box(&s.secrets[(next + i) % n]),
                    &wanted
                ));
            }
            out.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
        next = (next + PER_ROUND) % one.secrets.len();
    }
    (median(&mut a), median(&mut b))
}

// ------------------------------------------------------------------- limits on the hot path

/// Tokens of each kind in the limits comparison.
const LIMITED: usize = 1_000;

/// A service holding `LIMITED` plain tokens and `LIMITED` tokens with an allowlist, uses and a
/// rate limit (none of which runs out during the run), every one cached; returns it with both
/// lists of secrets.
fn limited_setup(
    rt: &tokio::runtime::Runtime,
) -> (Keyward, Vec<String>, Vec<String>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = ServerKey::generate().unwrap();
    let hasher = TokenHasher::new(&key);
    let (snapshot, _) = keyward_bench::synthetic(&hasher, 1, 1).unwrap();
    let owner = snapshot.users[0].user.id.clone();
    let keyward = rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("limits.db"))
            .await
            .unwrap();
        store.restore(&snapshot).await.unwrap();
        Keyward::new(
            Arc::new(store),
            Arc::new(SystemClock),
            hasher,
            Settings::default(),
        )
        .await
        .unwrap()
    });
    let limits = keyward_core::Limits {
        allowed_ips: vec![
            keyward_core::IpRange::parse("10.0.0.0/8").unwrap(),
            keyward_core::IpRange::parse("203.0.113.0/24").unwrap(),
        ],
        max_uses: Some(keyward_core::limits::MAX_USES),
        refill: None,
        rate_limit: Some(keyward_core::RateLimit::parse("1000000000/1d").unwrap()),
    };
    let op = Caller::operator("bench");
    let scopes = Scopes::parse(&["droplet:read"]).unwrap();
    let make = |limits: &keyward_core::Limits| -> Vec<String> {
        (0..LIMITED)
            .map(|_| {
                let issued = rt
                    .block_on(keyward.create_token(
                        &op,
                        Some(&owner),
                        TokenName::parse("bench").unwrap(),
                        scopes.clone(),
                        None,
                        limits.clone(),
                    ))
                    .unwrap();
                issued.secret.expose().to_owned()
            })
            .collect()
    };
    let plain = make(&keyward_core::Limits::default());
    let limited = make(&limits);
    for s in plain.iter().chain(&limited) {
        // The first verification leases the first share of each limited token.
        assert!(matches!(
            rt.block_on(keyward.verify(s, &Scopes::default(), Some(CLIENT))),
            Ok(Verdict::Active(_))
        ));
    }
    (keyward, plain, limited, dir)
}

/// The client address the limited tokens allow.
const CLIENT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9));

/// Alternates rounds of cached verification of plain tokens and of tokens with limits, on one
/// service, and returns the medians (ns per operation).
fn limits_ratio(
    rt: &tokio::runtime::Runtime,
    keyward: &Keyward,
    plain: &[String],
    limited: &[String],
) -> (f64, f64) {
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 100_000;
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let (mut a, mut b) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    let mut next = 0usize;
    for _ in 0..ROUNDS {
        for (secrets, out) in [(plain, &mut a), (limited, &mut b)] {
            let t = Instant::now();
            for i in 0..PER_ROUND {
                let s = black_box(&secrets[(next + i) % secrets.len()]);
                assert!(matches!(
                    run_now(
                        rt,
                        keyward
                            .verify_with(s, &wanted, Some(CLIENT), |t, _| black_box(t.id_packed()))
                    ),
                    Ok(Ok(_))
                ));
            }
            out.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        }
        next = (next + PER_ROUND) % plain.len();
    }
    (median(&mut a), median(&mut b))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i].as_secs_f64() * 1e6
}

// ------------------------------------------------------------------------------- cold path

/// Measures `COLD` cache misses against the bare store lookup, interleaved one by one.
async fn cold_run(store: Arc<dyn Store>, engine: &str) {
    let key = ServerKey::generate().unwrap();
    let hasher = TokenHasher::new(&key);
    let (snapshot, secrets) = seeded(&hasher, COLD);
    store.restore(&snapshot).await.unwrap();
    let keyward = Keyward::new(
        Arc::clone(&store),
        Arc::new(SystemClock),
        TokenHasher::new(&key),
        Settings::default(),
    )
    .await
    .unwrap();
    let (mut bare, mut cold) = (Vec::with_capacity(COLD), Vec::with_capacity(COLD));
    for s in &secrets {
        let t = Instant::now();
        let found = store.lookup(&hasher.hash_str(s)).await.unwrap();
        bare.push(t.elapsed());
        assert!(found.is_some());
        // Never verified before: a cache miss.
        let t = Instant::now();
        let verdict = keyward.verify(s, &Scopes::default(), None).await.unwrap();
        cold.push(t.elapsed());
        assert!(matches!(verdict, Verdict::Active(_)));
    }
    let (b50, k50) = (quantile(&mut bare, 0.5), quantile(&mut cold, 0.5));
    println!(
        "  {engine:<10} bare store lookup (HMAC + Store::lookup): p50 {b50:7.1} µs  p99 {:7.1} µs",
        quantile(&mut bare, 0.99)
    );
    println!(
        "  {engine:<10} keyward cold verify (cache miss)        : p50 {k50:7.1} µs  p99 {:7.1} µs   ratio p50 {:.2}x",
        quantile(&mut cold, 0.99),
        k50 / b50
    );
}

/// A fresh PostgreSQL database for the run, dropped by `Drop`; `None` if PostgreSQL is not
/// reachable through `psql`.
struct PgDatabase {
    server: String,
    name: String,
}

impl PgDatabase {
    fn create() -> Option<Self> {
        let server = std::env::var("KEYWARD_BENCH_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("keyward_bench_{}", std::process::id());
        let ok = std::process::Command::new("psql")
            .arg(format!("{server}/postgres"))
            .args(["-qc", &format!("CREATE DATABASE {name}")])
            .output()
            .is_ok_and(|o| o.status.success());
        ok.then_some(Self { server, name })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .arg(format!("{}/postgres", self.server))
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// Runs `run` on `rt` over a fresh SQLite file, then over a fresh PostgreSQL database when
/// `psql` can make one (saying so when it cannot).
fn on_each_engine(rt: &tokio::runtime::Runtime, run: impl AsyncFn(Arc<dyn Store>, &'static str)) {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = SqliteStore::open(&dir.path().join("bench.db"))
            .await
            .unwrap();
        run(Arc::new(store), "SQLite").await;
    });
    match PgDatabase::create() {
        Some(db) => rt.block_on(async {
            let store = PgStore::connect(&db.url()).await.unwrap();
            run(Arc::new(store), "PostgreSQL").await;
        }),
        None => println!(
            "  PostgreSQL skipped: psql could not create a database at KEYWARD_BENCH_PG \
             (default postgres://postgres@127.0.0.1:5432)"
        ),
    }
}

fn cold_report() {
    println!();
    println!("cold verification, {COLD} cache misses each, interleaved with the bare lookup:");
    // Multi-threaded, so PostgreSQL's change-feed listener runs beside the measurements.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    on_each_engine(&rt, cold_run);
    println!("  targets: keyward cold verify p50 <= 20 µs on SQLite, <= 300 µs on PostgreSQL");
}

// ------------------------------------------------------------------------------- creation

fn creation_report() {
    println!();
    println!("token creation on SQLite, {CREATED} each, interleaved (every one a durable commit):");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let key = ServerKey::generate().unwrap();
        let hasher = TokenHasher::new(&key);
        let (mut snapshot, _) = keyward_bench::synthetic(&hasher, CREATED, CREATED).unwrap();
        let prepared = std::mem::take(&mut snapshot.tokens);
        let hashes = std::mem::take(&mut snapshot.hashes);
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("create.db"))
                .await
                .unwrap(),
        );
        store.restore(&snapshot).await.unwrap();
        let owner = snapshot.users[0].user.id.clone();
        let keyward = Keyward::new(
            Arc::clone(&store),
            Arc::new(SystemClock),
            hasher,
            Settings::default(),
        )
        .await
        .unwrap();
        let op = Caller::operator("bench");
        let scopes = Scopes::parse(&["droplet:read", "volume:*"]).unwrap();
        let (mut bare, mut made) = (Vec::new(), Vec::new());
        for (i, (token, hash)) in prepared.iter().zip(&hashes).enumerate() {
            let audit = AuditEvent {
                at: token.created_at,
                kind: AuditKind::TokenCreated,
                actor: Actor::cli("bench"),
                subject_user: Some(owner.clone()),
                token_id: Some(token.id.clone()),
                ip: None,
                detail: None,
            };
            let stored: &StoredHash = &hash.hash;
            let t = Instant::now();
            store
                .insert_token(token, stored, &audit, None)
                .await
                .unwrap();
            bare.push(t.elapsed());
            let name = TokenName::parse(&format!("made {i}")).unwrap();
            let t = Instant::now();
            let issued = keyward
                .create_token(
                    &op,
                    Some(&owner),
                    name,
                    scopes.clone(),
                    None,
                    keyward_core::Limits::default(),
                )
                .await
                .unwrap();
            made.push(t.elapsed());
            black_box(issued.secret);
        }
        let (b50, k50) = (quantile(&mut bare, 0.5), quantile(&mut made, 0.5));
        println!(
            "  bare Store::insert_token of a prepared record : p50 {b50:8.1} µs  p99 {:8.1} µs",
            quantile(&mut bare, 0.99)
        );
        println!(
            "  keyward create_token (checks, secret, hash)   : p50 {k50:8.1} µs  p99 {:8.1} µs   ratio p50 {:.2}x",
            quantile(&mut made, 0.99),
            k50 / b50
        );
    });
}

/// Creators at once in the concurrency comparison (against one).
const CREATORS: usize = 32;
/// Alternating rounds of one creator and of [`CREATORS`].
const CREATION_ROUNDS: usize = 5;

/// Creations each of the [`CREATORS`] makes in a round: `KEYWARD_BENCH_CREATIONS_EACH`, 16 by
/// default.
fn creations_each() -> usize {
    std::env::var("KEYWARD_BENCH_CREATIONS_EACH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

/// Concurrent creation on each engine: rounds alternating one creator (64 creations in a row)
/// and [`CREATORS`] at once (16 each, or `KEYWARD_BENCH_CREATIONS_EACH`), every creation a
/// durable commit; creations per second (median of the rounds) and each creation's latency.
fn concurrency_report() {
    println!();
    println!(
        "token creation, 1 creator vs {CREATORS} at once ({} each), {CREATION_ROUNDS} alternating rounds (every creation acknowledged only once durable):",
        creations_each()
    );
    // As `keyward serve` runs: one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    on_each_engine(&rt, concurrency_run);
    println!(
        "  targets (SQLite): {CREATORS} creators >= 4x the creations/s of one; their p99 <= 10x one creator's p50"
    );
}

async fn concurrency_run(store: Arc<dyn Store>, engine: &str) {
    let key = ServerKey::generate().unwrap();
    let hasher = TokenHasher::new(&key);
    let (snapshot, _) = keyward_bench::synthetic(&hasher, 1, 1).unwrap();
    store.restore(&snapshot).await.unwrap();
    let owner = snapshot.users[0].user.id.clone();
    let keyward = Arc::new(
        Keyward::new(store, Arc::new(SystemClock), hasher, Settings::default())
            .await
            .unwrap(),
    );
    let scopes = Scopes::parse(&["droplet:read", "volume:*"]).unwrap();
    let mut rates: [Vec<f64>; 2] = Default::default();
    let mut latencies: [Vec<Duration>; 2] = Default::default();
    for round in 0..CREATION_ROUNDS {
        for (k, (creators, each)) in [(1, 64), (CREATORS, creations_each())]
            .into_iter()
            .enumerate()
        {
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for c in 0..creators {
                let (keyward, owner, scopes) =
                    (Arc::clone(&keyward), owner.clone(), scopes.clone());
                set.spawn(async move {
                    let op = Caller::operator("bench");
                    let mut took = Vec::with_capacity(each);
                    for i in 0..each {
                        let name = TokenName::parse(&format!("r{round} c{c} #{i}")).unwrap();
                        let t = Instant::now();
                        let issued = keyward
                            .create_token(
                                &op,
                                Some(&owner),
                                name,
                                scopes.clone(),
                                None,
                                keyward_core::Limits::default(),
                            )
                            .await
                            .unwrap();
                        took.push(t.elapsed());
                        black_box(issued.secret);
                    }
                    took
                });
            }
            while let Some(took) = set.join_next().await {
                latencies[k].extend(took.unwrap());
            }
            let made = creators * each;
            rates[k].push(made as f64 / start.elapsed().as_secs_f64());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (one_rate, many_rate) = (median(&mut rates[0]), median(&mut rates[1]));
    let [one, many] = &mut latencies;
    let one_p50 = quantile(one, 0.5);
    println!(
        "  {engine:<10}  1 creator : {one_rate:8.0} creations/s  p50 {one_p50:8.1} µs  p99 {:8.1} µs",
        quantile(one, 0.99)
    );
    let many_p99 = quantile(many, 0.99);
    println!(
        "  {engine:<10} {CREATORS} creators: {many_rate:8.0} creations/s  p50 {:8.1} µs  p99 {many_p99:8.1} µs   ratio {:.2}x the creations/s of one, p99 {:.1}x one creator's p50",
        quantile(many, 0.5),
        many_rate / one_rate,
        many_p99 / one_p50
    );
}

fn main() {
    keyward_server::telemetry::prometheus();
    if std::env::var_os("KEYWARD_BENCH_CREATION_ONLY").is_some() {
        // Only the creation figures (3 and 4), without the caches' set-up.
        creation_report();
        concurrency_report();
        return;
    }
    let large = std::env::var("KEYWARD_BENCH_LARGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LARGE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Inside the runtime, so a cache miss (which would await the store) finds its reactor.
    let _runtime = rt.enter();
    let mut c = Criterion::default().configure_from_args();
    let mut ratios = Vec::new();
    let mut one_key = None;
    // KEYWARD_BENCH_LARGE_DIR: the large store is one seeded beforehand (see `seeded_dir_setup`).
    let large_dir = std::env::var_os("KEYWARD_BENCH_LARGE_DIR").map(std::path::PathBuf::from);
    for n in [SMALL, large] {
        let setup = match &large_dir {
            Some(dir) if n != SMALL => seeded_dir_setup(&rt, dir),
            _ => cached_setup(&rt, n, 1),
        };
        let n = setup.secrets.len();
        criterion_benches(&mut c, &rt, &setup);
        ratios.push((n, cached_ratio(&rt, &setup)));
        one_key.get_or_insert(setup);
    }
    // During a rotation: a ring of two, every token under the current key (as after the drain,
    // or for every token made since the rotation).
    let two_keys = cached_setup(&rt, SMALL, 2);
    let rotation = ring_ratio(&rt, one_key.as_ref().unwrap(), &two_keys);
    // On a runtime with a worker, as `keyward serve` runs: a limited token's next share is
    // leased in the background while verification goes on.
    let worker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (plain_ns, limited_ns) = {
        let _worker = worker.enter();
        let (service, plain, limited, _dir) = limited_setup(&worker);
        limits_ratio(&worker, &service, &plain, &limited)
    };
    c.final_summary();
    println!();
    println!("cached verify, same-run ratio (21 alternating rounds of 100000, medians):");
    for (n, (b, k)) in &ratios {
        println!(
            "  {n:>8} tokens: baseline HMAC-SHA256 + HashMap {b:7.1} ns/op, keyward cached verify (1 scope) {k:7.1} ns/op, ratio {:.2}x   (target <= 1.5x)",
            k / b
        );
    }
    if let [(n0, (_, k0)), (n1, (_, k1))] = ratios.as_slice() {
        println!(
            "  keyward at {n1} / at {n0} tokens: {:.2}x   (target <= 1.5x)",
            k1 / k0
        );
    }
    let (one, two) = rotation;
    println!(
        "  {SMALL:>8} tokens under the current key: one-key ring {one:7.1} ns/op, two-key ring {two:7.1} ns/op, ratio {:.2}x   (target 1.00x: an older key costs nothing until a token uses it)",
        two / one
    );
    println!(
        "  {LIMITED:>8} tokens each: plain {plain_ns:7.1} ns/op, with an allowlist, uses and a rate limit {limited_ns:7.1} ns/op, ratio {:.2}x   (target <= 1.2x)",
        limited_ns / plain_ns
    );
    cold_report();
    creation_report();
    concurrency_report();
}

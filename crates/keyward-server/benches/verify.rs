//! In-process verification of a cached token, beside its physical floor measured in the same
//! run: one HMAC-SHA256 of the token plus one `HashMap` lookup among as many entries.
//!
//! `cargo bench -p keyward-server --bench verify` prints criterion's figures, then an
//! interleaved measurement of both (alternating rounds, medians) and their ratio, because these
//! machines are shared and noisy: only a ratio measured side by side means anything.

#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]
#![expect(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failure should stop the run loudly"
)]

use criterion::{BenchmarkId, Criterion};
use hmac::{Hmac, KeyInit, Mac};
use keyward_core::{Scopes, ServerKey, SystemClock, TokenHasher, TokenName};
use keyward_server::service::{Acting, Keyward, Settings, Verdict};
use keyward_store::SqliteStore;
use sha2::Sha256;
use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Tokens in the cache, and entries in the baseline's map.
const TOKENS: usize = 1_000;

struct Setup {
    keyward: Arc<Keyward>,
    secrets: Vec<String>,
    baseline_key: Hmac<Sha256>,
    baseline_map: HashMap<[u8; 32], u64>,
    _dir: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
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

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    keyward_server::telemetry::prometheus();
    let key = ServerKey::generate().unwrap();
    let (keyward, secrets) = rt.block_on(async {
        let store = Arc::new(
            SqliteStore::open(&dir.path().join("keyward.db"))
                .await
                .unwrap(),
        );
        let keyward = Keyward::new(
            store,
            Arc::new(SystemClock),
            TokenHasher::new(&key),
            Settings::default(),
        )
        .await
        .unwrap();
        let op = Acting::operator("bench");
        let user = keyward
            .add_user(
                &op,
                keyward_core::UserName::parse("bench").unwrap(),
                false,
                None,
            )
            .await
            .unwrap();
        let scopes = Scopes::parse(&["droplet:read", "volume:*"]).unwrap();
        let mut secrets = Vec::with_capacity(TOKENS);
        for i in 0..TOKENS {
            let name = TokenName::parse(&format!("bench {i}")).unwrap();
            let issued = keyward
                .create_token(&op, &user.id, name, scopes.clone(), None)
                .await
                .unwrap();
            secrets.push(issued.secret.expose().to_owned());
        }
        (keyward, secrets)
    });
    // Warm the cache: every later verification is a hit.
    for s in &secrets {
        assert!(matches!(
            rt.block_on(keyward.verify(s, &Scopes::default(), None)),
            Ok(Verdict::Active(_))
        ));
    }
    let baseline_key = <Hmac<Sha256> as KeyInit>::new_from_slice(&[7u8; 32]).unwrap();
    let baseline_map = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| (baseline_hash(&baseline_key, s), i as u64))
        .collect();
    Setup {
        keyward: Arc::new(keyward),
        secrets,
        baseline_key,
        baseline_map,
        _dir: dir,
        rt,
    }
}

fn baseline_hash(key: &Hmac<Sha256>, token: &str) -> [u8; 32] {
    let mut mac = key.clone();
    mac.update(token.as_bytes());
    mac.finalize().into_bytes().into()
}

fn baseline_once(s: &Setup, token: &str) -> Option<u64> {
    s.baseline_map
        .get(&baseline_hash(&s.baseline_key, token))
        .copied()
}

fn verify_once(s: &Setup, token: &str, wanted: &Scopes) -> bool {
    matches!(
        run_now(&s.rt, s.keyward.verify(token, wanted, None)),
        Ok(Verdict::Active(_))
    )
}

fn criterion_benches(c: &mut Criterion, s: &Setup) {
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let mut group = c.benchmark_group("cached_verify");
    let mut i = 0usize;
    group.bench_function(
        BenchmarkId::new("baseline_hmac_sha256_plus_hashmap", TOKENS),
        |b| {
            b.iter(|| {
                i = (i + 1) % s.secrets.len();
                black_box(baseline_once(s, black_box(&s.secrets[i])))
            })
        },
    );
    group.bench_function(BenchmarkId::new("keyward_verify", TOKENS), |b| {
        b.iter(|| {
            i = (i + 1) % s.secrets.len();
            black_box(verify_once(s, black_box(&s.secrets[i]), &wanted))
        })
    });
    group.finish();
}

/// Alternates rounds of the baseline and of keyward, so both see the same machine state, and
/// reports the medians and their ratio.
fn ratio_report(s: &Setup) {
    const ROUNDS: usize = 21;
    const PER_ROUND: usize = 100_000;
    let wanted = Scopes::parse(&["droplet:read"]).unwrap();
    let (mut base, mut kw) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    for _ in 0..ROUNDS {
        let t = Instant::now();
        for i in 0..PER_ROUND {
            black_box(baseline_once(s, black_box(&s.secrets[i % s.secrets.len()])));
        }
        base.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
        let t = Instant::now();
        for i in 0..PER_ROUND {
            assert!(verify_once(
                s,
                black_box(&s.secrets[i % s.secrets.len()]),
                &wanted
            ));
        }
        kw.push(t.elapsed().as_nanos() as f64 / PER_ROUND as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (b, k) = (median(&mut base), median(&mut kw));
    println!();
    println!(
        "same-run ratio ({ROUNDS} alternating rounds of {PER_ROUND}, medians, {TOKENS} tokens cached):"
    );
    println!("  baseline  HMAC-SHA256 + HashMap lookup : {b:8.1} ns/op");
    println!("  keyward   cached verify (with scope)    : {k:8.1} ns/op");
    println!(
        "  ratio     keyward / baseline            : {:8.2}x   (issue 2 target <= 2x, issue 6 target <= 1.5x)",
        k / b
    );
}

fn main() {
    let setup = setup();
    // Inside the runtime, so a cache miss (which would await the store) finds its reactor.
    let _runtime = setup.rt.enter();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &setup);
    c.final_summary();
    ratio_report(&setup);
}

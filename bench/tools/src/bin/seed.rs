//! Bulk seeding for keyward's scale benchmarks: writes N tokens into an empty store in one
//! transaction through [`Maintenance::restore`](keyward_store::Maintenance::restore), the same path `keyward store copy` uses, instead of
//! one service call per token.
//!
//! `KEYWARD_SERVER_KEY=<hex> seed DATABASE TOKENS SECRETS_FILE [TOKENS_PER_USER]`
//!
//! DATABASE is a SQLite file path or a `postgres://` URL; the store must be empty. Every token
//! gets the scopes `droplet:read volume:*`, expires in 30 days, and belongs to one of
//! TOKENS / TOKENS_PER_USER users (default 10 tokens each). The secrets are written one per
//! line to SECRETS_FILE (mode 0600), in creation order. This is a benchmark tool: it writes
//! secrets to a file on purpose.

#![expect(clippy::print_stdout, reason = "reports what it wrote")]

use anyhow::{Context as _, bail};
use keyward_core::{ServerKey, TokenHasher};
use keyward_store::{PgStore, SqliteStore, Store};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [database, tokens, secrets_file, rest @ ..] = args.as_slice() else {
        bail!("usage: seed DATABASE TOKENS SECRETS_FILE [TOKENS_PER_USER]");
    };
    let tokens: usize = tokens.parse().context("TOKENS is a number")?;
    let per_user: usize = match rest.first() {
        Some(n) => n.parse().context("TOKENS_PER_USER is a number")?,
        None => 10,
    };
    let key_hex = std::env::var("KEYWARD_SERVER_KEY").context("set KEYWARD_SERVER_KEY")?;
    let key = ServerKey::from_hex(&key_hex)?;
    let hasher = TokenHasher::new(&key);

    let started = Instant::now();
    let (snapshot, secrets) = keyward_bench::synthetic(&hasher, tokens, per_user.max(1))?;
    let built = started.elapsed();

    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(secrets_file)
        .with_context(|| format!("cannot write {secrets_file}"))?;
    let mut buf = String::with_capacity(secrets.len() * 56);
    for s in &secrets {
        buf.push_str(s.expose());
        buf.push('\n');
    }
    out.write_all(buf.as_bytes())?;

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let store: Arc<dyn Store> =
                if database.starts_with("postgres://") || database.starts_with("postgresql://") {
                    Arc::new(PgStore::connect(database).await?)
                } else {
                    Arc::new(SqliteStore::open(Path::new(database)).await?)
                };
            store.restore(&snapshot).await?;
            anyhow::Ok(())
        })?;
    println!(
        "seeded {tokens} tokens for {} users in {:.1} s (generating {:.1} s)",
        snapshot.users.len(),
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
    Ok(())
}

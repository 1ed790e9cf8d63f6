//! Well-formed tokens that were never issued, for the forged-token flood of `bench/forged.sh`:
//! the default prefix, 256 random bits and a valid checksum, so each passes the format check and
//! costs keyward a keyed hash and a lookup.
//!
//! `forge COUNT FILE`: writes COUNT tokens to FILE, one per line.

#![expect(clippy::print_stdout, reason = "reports what it wrote")]

use anyhow::{Context as _, bail};
use keyward_core::{Prefix, TokenSecret};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [count, file] = args.as_slice() else {
        bail!("usage: forge COUNT FILE");
    };
    let count: usize = count.parse().context("COUNT is a number")?;
    let prefix = Prefix::default();
    let mut buf = String::with_capacity(count * 56);
    for _ in 0..count {
        buf.push_str(TokenSecret::generate(&prefix)?.expose());
        buf.push('\n');
    }
    std::fs::write(file, buf).with_context(|| format!("cannot write {file}"))?;
    println!("forged {count} well-formed tokens into {file}");
    Ok(())
}

//! Revocation propagation between two keyward instances sharing one PostgreSQL database
//! (issue 3, acceptance 7).
//!
//! `propagate A_URL B_URL BEARER [REVOCATIONS]` (default 200). For each round it creates a token
//! through instance A and, from the moment A acknowledges it, verifies it on B until B accepts
//! it: B answers `unknown` until its change feed has brought it the new hash, so this times the
//! creation's propagation, and the accepted verification is a cold one (B's cache has never seen
//! the token). It verifies once more (served from B's cache), revokes the token through A, and
//! from the moment A acknowledges the revocation polls B's `POST /v1/verify` in a tight loop
//! until B answers `revoked`. It prints the median, p99 and maximum of both propagation delays,
//! and B's cold and cached verification latency over HTTP.

#![expect(clippy::print_stdout, reason = "reports on stdout")]

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A round whose revocation has not reached B after this long fails the run.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b, bearer, rest @ ..] = args.as_slice() else {
        bail!("usage: propagate A_URL B_URL BEARER [REVOCATIONS]");
    };
    let rounds: usize = rest.first().map_or(Ok(200), |n| n.parse())?;
    // One keep-alive connection per instance, as a gateway would hold.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;

    let (mut delays, mut polls, mut cold, mut warm) = (vec![], vec![], vec![], vec![]);
    let (mut arrivals, mut unknown_rounds) = (vec![], 0);
    for round in 0..rounds {
        let created: Value = client
            .post(format!("{a}/v1/tokens"))
            .bearer_auth(bearer)
            .json(&json!({"name": format!("propagation {round}"), "scopes": ["droplet:read"], "expires": "1d"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let secret = created["secret"].as_str().context("no secret")?.to_owned();
        let id = created["token"]["id"].as_str().context("no id")?.to_owned();

        let created_at = Instant::now();
        let mut unknown_first = false;
        loop {
            let started = Instant::now();
            let answer = verify(&client, b, &secret).await?;
            if answer["active"] == true {
                cold.push(started.elapsed());
                break;
            }
            if answer["reason"] != "unknown" || created_at.elapsed() > GIVE_UP_AFTER {
                bail!("round {round}: B does not see the new token as active: {answer}");
            }
            unknown_first = true;
        }
        arrivals.push(created_at.elapsed());
        unknown_rounds += usize::from(unknown_first);
        let started = Instant::now();
        let answer = verify(&client, b, &secret).await?;
        warm.push(started.elapsed());
        if answer["active"] != true {
            bail!("round {round}: B no longer sees the new token as active: {answer}");
        }

        client
            .delete(format!("{a}/v1/tokens/{id}"))
            .bearer_auth(bearer)
            .send()
            .await?
            .error_for_status()?;
        let acknowledged = Instant::now();
        let mut n = 0u32;
        loop {
            n += 1;
            let answer = verify(&client, b, &secret).await?;
            if answer["reason"] == "revoked" {
                break;
            }
            if answer["active"] != true {
                bail!("round {round}: unexpected answer from B: {answer}");
            }
            if acknowledged.elapsed() > GIVE_UP_AFTER {
                bail!(
                    "round {round}: B still accepts the token {GIVE_UP_AFTER:?} after revocation"
                );
            }
        }
        delays.push(acknowledged.elapsed());
        polls.push(n);
    }

    let stale_rounds = polls.iter().filter(|&&n| n > 1).count();
    println!("revocations\t{rounds}");
    println!("rounds where B's first verification after the ack was still active\t{stale_rounds}");
    println!(
        "rounds where B's first verification of the new token answered unknown\t{unknown_rounds}"
    );
    report(
        "creation propagation (ack by A -> B accepts)",
        &mut arrivals,
    );
    report(
        "propagation delay (ack by A -> B answers revoked)",
        &mut delays,
    );
    report("B cold verify over HTTP (cache miss)", &mut cold);
    report("B cached verify over HTTP", &mut warm);
    Ok(())
}

async fn verify(client: &reqwest::Client, url: &str, secret: &str) -> anyhow::Result<Value> {
    Ok(client
        .post(format!("{url}/v1/verify"))
        .json(&json!({"token": secret}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e6
    };
    println!(
        "{what}\tmedian {:.0} µs\tp99 {:.0} µs\tmax {:.0} µs",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

//! `keyward user ...`: the operator's side of the platform's users, against the real binary.

use crate::helpers::{Server, at_terminal, cli, create_token};

#[tokio::test]
async fn the_operator_manages_people_and_service_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();

    let out = cli(
        dir,
        &[
            "user",
            "add",
            "ada@example.com",
            "--external-id",
            "4711",
            "--email",
            "ada@example.com",
        ],
        None,
    );
    assert!(
        out.ok().starts_with("added user ada@example.com (usr_"),
        "{out:?}"
    );
    let out = cli(dir, &["user", "add", "deploy-bot", "--service"], None);
    assert!(
        out.ok().starts_with("added service account deploy-bot"),
        "{out:?}"
    );
    // A service account never signs in: no password.
    let refused = cli(
        dir,
        &["user", "add", "bot2", "--service", "--password-stdin"],
        Some("correct horse battery staple\n"),
    );
    assert_eq!(refused.code(), Some(2), "{refused:?}");
    assert!(refused.stderr.contains("cannot be used"), "{refused:?}");
    cli(dir, &["user", "add", "usr_01abc"], None).failed_cleanly(1);
    cli(dir, &["user", "add", "x", "--external-id", "4711"], None).failed_cleanly(1);

    // Show by name or id, as text or JSON.
    let ada = cli(dir, &["user", "show", "ada@example.com", "--json"], None).json();
    assert_eq!(ada["external_id"], "4711");
    assert_eq!(ada["kind"], "person");
    let id = ada["id"].as_str().unwrap().to_owned();
    let text = cli(dir, &["user", "show", &id], None);
    assert!(text.ok().contains("external id  4711"), "{text:?}");
    cli(dir, &["user", "show", "nobody"], None).failed_cleanly(1);

    let list = cli(dir, &["user", "list", "--json"], None).json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let table = cli(dir, &["user", "list"], None);
    assert!(table.ok().contains("service"), "{table:?}");

    // Admin flag, password, disable and enable.
    let out = cli(dir, &["user", "set-admin", "ada@example.com", "true"], None);
    assert!(out.ok().starts_with("admin ada@example.com"), "{out:?}");
    cli(
        dir,
        &["user", "passwd", "ada@example.com"],
        Some("correct horse battery staple\n"),
    )
    .ok();
    cli(
        dir,
        &["user", "passwd", "deploy-bot"],
        Some("correct horse battery staple\n"),
    )
    .failed_cleanly(1);
    cli(dir, &["user", "passwd", "ada@example.com"], Some("short\n")).failed_cleanly(1);

    // A token of the robot's works until the robot is deleted.
    let (robot, _) = create_token(dir, "deploy-bot", "deploys", &["droplet:read"]);
    let server = Server::start(dir, &[]);
    server.api.assert_active(&robot.secret).await;
    cli(dir, &["user", "disable", "deploy-bot"], None).ok();
    let v = server.api.verify(&robot.secret, &[]).await;
    assert_eq!(v["reason"], "owner_disabled", "{v}");
    cli(dir, &["user", "enable", "deploy-bot"], None).ok();
    server.api.assert_active(&robot.secret).await;

    // Deleting asks for confirmation; without a terminal, --yes is required.
    cli(dir, &["user", "delete", "deploy-bot"], None).failed_cleanly(1);
    server.api.assert_active(&robot.secret).await;
    let out = cli(dir, &["user", "delete", "deploy-bot", "--yes"], None);
    assert!(out.ok().contains("owner deleted"), "{out:?}");
    let v = server.api.verify(&robot.secret, &[]).await;
    assert_eq!(v["reason"], "revoked", "{v}");
    cli(dir, &["user", "show", "deploy-bot"], None).failed_cleanly(1);
    // The name is free again.
    cli(dir, &["user", "add", "deploy-bot", "--service"], None).ok();
    let tokens = cli(dir, &["token", "list", "--json"], None).json();
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == robot.id.as_str())
        .unwrap();
    assert_eq!(revoked["revoke_reason"], "owner deleted");
}

#[test]
fn a_password_typed_at_a_terminal_is_asked_twice_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    const PASSWORD: &str = "correct horse battery staple";

    // Two different answers: refused, and nobody was added.
    let refused = at_terminal(
        dir,
        &["user", "add", "alice", "--admin", "--password-stdin"],
        ": ",
        &[PASSWORD, "correct horse battery stapler"],
    );
    assert_eq!(refused.out.code(), Some(1), "{refused:?}");
    assert!(refused.out.stderr.contains("Password: "), "{refused:?}");
    assert!(refused.out.stderr.contains("again: "), "{refused:?}");
    assert!(refused.out.stderr.contains("differ"), "{refused:?}");
    assert!(
        !refused.screen.contains("correct horse"),
        "echoed: {refused:?}"
    );
    cli(dir, &["user", "show", "alice"], None).failed_cleanly(1);

    // The same twice: added, with that password; the typing never showed.
    let added = at_terminal(
        dir,
        &["user", "add", "alice", "--admin", "--password-stdin"],
        ": ",
        &[PASSWORD, PASSWORD],
    );
    assert!(added.out.ok().starts_with("added admin alice"), "{added:?}");
    assert!(!added.screen.contains("correct horse"), "echoed: {added:?}");
    assert!(!added.out.stderr.contains("correct horse"), "{added:?}");

    // Changed the same way; from a pipe, one line as before.
    let changed = at_terminal(
        dir,
        &["user", "password", "alice"],
        ": ",
        &["another long passphrase", "another long passphrase"],
    );
    assert!(
        changed.out.ok().contains("password set for admin alice"),
        "{changed:?}"
    );
    assert!(
        !changed.screen.contains("another long"),
        "echoed: {changed:?}"
    );
    let piped = cli(
        dir,
        &["user", "password", "alice", "--password-stdin"],
        Some("a third long passphrase\n"),
    );
    assert!(piped.ok().contains("password set"), "{piped:?}");

    // A service account never has one: refused before anything is asked.
    cli(dir, &["user", "add", "robot", "--service"], None).ok();
    let robot = at_terminal(dir, &["user", "password", "robot"], ": ", &[]);
    assert_eq!(robot.out.code(), Some(1), "{robot:?}");
    assert!(robot.out.stderr.contains("service account"), "{robot:?}");
    assert!(!robot.out.stderr.contains("Password"), "{robot:?}");

    // Adding someone who exists says how to change their password.
    let again = cli(
        dir,
        &["user", "add", "alice", "--password-stdin"],
        Some("yet another passphrase\n"),
    );
    again.failed_cleanly(1);
    assert!(
        again.stderr.contains("keyward user password alice"),
        "{again:?}"
    );
}
